#include "metrics_log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "durable_file.hpp"
#include "errors.hpp"

namespace moas_cli {

namespace {

// The lines of the log at path whose step is at most `step`; none for a fresh run (step 0 keeps no line: a fresh
// run starts its own log).
std::string entries_up_to(const std::string &path, int step) {
  std::string kept;
  if (step == 0) return kept;
  std::ifstream previous(path);
  std::string line;
  while (std::getline(previous, line)) {
    const nlohmann::json entry = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const nlohmann::json *entry_step = entry.is_object() && entry.contains("step") ? &entry["step"] : nullptr;
    if (entry_step && entry_step->is_number_integer() && entry_step->get<long long>() <= step) kept += line + '\n';
  }
  return kept;
}

}  // namespace

MetricsLog::MetricsLog(const std::string &path, int resumed_step) : path_(path) {
  replace_file(path, entries_up_to(path, resumed_step));
  fd_ = open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd_ < 0) throw RuntimeFailure("cannot write " + path + ": " + std::strerror(errno));
}

MetricsLog::~MetricsLog() { close(fd_); }

void MetricsLog::write(const nlohmann::ordered_json &entry) { write_all(fd_, entry.dump() + '\n', path_); }

void MetricsLog::sync() {
  if (fsync(fd_) != 0) throw RuntimeFailure("cannot sync " + path_ + ": " + std::strerror(errno));
}

}  // namespace moas_cli
