// The fuzz input as a file the library can open by path: one memfd per process, rewritten for each input, so the
// loaders read it through their usual path-based calls without touching the disk.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

class InputFile {
 public:
  InputFile() : fd_(memfd_create("moas-fuzz-input", 0)) {
    if (fd_ < 0) std::abort();
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  InputFile(const InputFile &) = delete;
  InputFile &operator=(const InputFile &) = delete;
  ~InputFile() { close(fd_); }

  // Replaces the file's contents; returns its path.
  const std::string &write(const uint8_t *data, size_t size) {
    if (ftruncate(fd_, 0) != 0 || (size && pwrite(fd_, data, size, 0) != (ssize_t)size)) std::abort();
    return path_;
  }

 private:
  int fd_;
  std::string path_;
};
