#include "run_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "errors.hpp"

namespace moas_cli {

RunLock::RunLock(const std::string &dir) : fd_(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
  if (fd_ < 0) throw RuntimeFailure("cannot open " + dir + ": " + std::strerror(errno));
  // A filesystem that cannot lock at all (some network ones) should not stop training: only a held lock does.
  if (flock(fd_, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) return;
  close(fd_);
  throw RuntimeFailure("another moas is training in " + dir + ": wait for it to end, or use another --out");
}

RunLock::~RunLock() { close(fd_); }

}  // namespace moas_cli
