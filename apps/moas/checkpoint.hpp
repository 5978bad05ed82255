// A run's files: the checkpoint pair (weights with the trainer's metadata, optimizer state) and metrics.jsonl.
#pragma once

#include <moas.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "dataset.hpp"
#include "options.hpp"

namespace moas_cli {

struct RunFiles {
  explicit RunFiles(const std::string &dir);
  std::string dir;
  std::string model;      // DIR/model.safetensors
  std::string optimizer;  // DIR/model.optim.safetensors
  std::string metrics;    // DIR/metrics.jsonl
};

// What moas train stores under the checkpoint's "user" metadata: the vocabulary, the step, the data, the seed and
// every stored setting, so that `generate` can decode and `train --resume` can continue exactly.
nlohmann::json checkpoint_metadata(const Corpus &corpus, const TrainOptions &options, int step);

// The metadata of a checkpoint written by moas train; RuntimeFailure when path is missing, damaged or foreign.
nlohmann::json read_checkpoint_metadata(const std::string &path);

// Writes the weights, then the optimizer state (each through a temporary file and a rename).
void save_checkpoint(const moas_model *model, const RunFiles &files, const nlohmann::json &metadata);

// Loads weights and optimizer state into a model built from the same settings; the optimizer must be at `step`.
void restore_checkpoint(moas_model *model, const RunFiles &files, int step);

// One JSON object a line. A resumed run keeps the entries up to its checkpoint's step and drops any later ones
// (logged after that checkpoint by the run it resumes), so the file reads as one straight run.
class MetricsLog {
 public:
  MetricsLog(const std::string &path, int resumed_step);
  void write(const nlohmann::ordered_json &entry);

 private:
  std::ofstream out_;
  std::string path_;
};

}  // namespace moas_cli
