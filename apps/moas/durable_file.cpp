#include "durable_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "errors.hpp"

namespace moas_cli {

namespace {

[[noreturn]] void fail(const std::string &what, const std::string &path) {
  throw RuntimeFailure("cannot " + what + " " + path + ": " + std::strerror(errno));
}

// Closing after a failed call must not replace the errno that says why it failed.
void close_keeping_errno(int fd) {
  const int error = errno;
  close(fd);
  errno = error;
}

// `unsupported`: an errno that means the filesystem cannot sync this kind of file, which is then left as it is.
void sync_path(const std::string &path, int flags, int unsupported) {
  const int fd = open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) fail("open", path);
  if (fsync(fd) != 0 && errno != unsupported) {
    close_keeping_errno(fd);
    fail("sync", path);
  }
  close(fd);
}

}  // namespace

std::string parent_directory(const std::string &path) {
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

void sync_file(const std::string &path) { sync_path(path, O_RDONLY, /*unsupported=*/0); }

// Some filesystems (network and FUSE ones) refuse to sync a directory with EINVAL: their renames are as durable as
// they make them, and refusing to save a checkpoint there would help no one.
void sync_directory(const std::string &dir) { sync_path(dir, O_RDONLY | O_DIRECTORY, EINVAL); }

void write_all(int fd, const std::string &text, const std::string &path) {
  for (size_t written = 0; written < text.size();) {
    const ssize_t n = write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) errno = ENOSPC;
    if (n <= 0) fail("write", path);
    written += (size_t)n;
  }
}

void replace_file(const std::string &path, const std::string &contents) {
  const std::string temporary = path + ".tmp";
  const int fd = open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("create", temporary);
  try {
    write_all(fd, contents, temporary);
  } catch (const RuntimeFailure &) {
    close(fd);
    throw;
  }
  if (fsync(fd) != 0) {
    close_keeping_errno(fd);
    fail("sync", temporary);
  }
  if (close(fd) != 0) fail("write", temporary);
  if (std::rename(temporary.c_str(), path.c_str()) != 0) fail("rename " + temporary + " to", path);
  sync_directory(parent_directory(path));
}

}  // namespace moas_cli
