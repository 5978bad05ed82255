// DIR/metrics.jsonl: one JSON object a line, appended as a run goes, so a kill loses at most the line being written.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace moas_cli {

// A resumed run keeps the entries up to its checkpoint's step and drops later ones (the run it resumes logged them
// after that checkpoint, and a kill may have cut the last one short), so the file reads as one straight run. That
// prefix is built in a new file that a rename puts in place: a kill during the resumption loses no line either.
class MetricsLog {
 public:
  MetricsLog(const std::string &path, int resumed_step);
  ~MetricsLog();
  MetricsLog(const MetricsLog &) = delete;
  MetricsLog &operator=(const MetricsLog &) = delete;

  void write(const nlohmann::ordered_json &entry);
  // Makes the entries written so far durable: done before a checkpoint that counts them is committed, so a power
  // cut cannot leave a checkpoint whose steps the log lacks.
  void sync();

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace moas_cli
