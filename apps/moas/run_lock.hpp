// One writer per run directory: two trainings with the same --out would delete each other's checkpoints as strays.
#pragma once

#include <string>

namespace moas_cli {

// An flock on the directory itself (no lock file to leave behind), which the kernel drops when the process ends,
// however it ends. RuntimeFailure when another process holds it; nothing where the filesystem cannot lock.
class RunLock {
 public:
  explicit RunLock(const std::string &dir);
  ~RunLock();
  RunLock(const RunLock &) = delete;
  RunLock &operator=(const RunLock &) = delete;

 private:
  int fd_;
};

}  // namespace moas_cli
