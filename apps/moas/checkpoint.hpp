// A run's checkpoints: the trainer's metadata in the weights, and the on-disk layout that keeps the last complete
// pair of weights and optimizer state whatever moment a kill, a power cut or a full disk interrupts a save.
#pragma once

#include <moas.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "dataset.hpp"
#include "options.hpp"

namespace moas_cli {

// A run's directory:
//   DIR/checkpoints/step-000120/model.safetensors        the weights, with the trainer's metadata
//   DIR/checkpoints/step-000120/model.optim.safetensors  the AdamW state at the same step
//   DIR/latest             one line naming the pair to resume from: checkpoints/step-000120
//   DIR/model.safetensors  a hard link to that pair's weights, for people and `moas generate`
//   DIR/metrics.jsonl      see metrics_log.hpp
//   DIR/train.svg          its loss and routing, redrawn at every validation (training_plot.hpp)
// A save writes a whole new pair beside the last one and syncs it; only then does a rename switch DIR/latest to it,
// and only then is the older pair deleted. --resume follows DIR/latest, so it always finds a complete pair.
struct RunFiles {
  explicit RunFiles(const std::string &dir);
  std::string dir;
  std::string latest;       // DIR/latest
  std::string checkpoints;  // DIR/checkpoints
  std::string model;        // DIR/model.safetensors
  std::string metrics;      // DIR/metrics.jsonl
  std::string plot;         // DIR/train.svg
};

struct CheckpointPair {
  std::string model;
  std::string optimizer;
};

// What moas train stores under the checkpoint's "user" metadata: the vocabulary, the step, the data, the seed and
// every stored setting, so that `generate` can decode and `train --resume` can continue exactly.
nlohmann::json checkpoint_metadata(const Corpus &corpus, const TrainOptions &options, int step);

// The metadata of a checkpoint written by moas train, its fields' types checked (the vocabulary is checked when it
// is read); RuntimeFailure naming path when it is missing, damaged or foreign.
nlohmann::json read_checkpoint_metadata(const std::string &path);

// The pair DIR/latest names; in a run written before DIR/latest existed, DIR/model.safetensors and
// DIR/model.optim.safetensors. nullopt when DIR holds neither; RuntimeFailure when DIR/latest is damaged.
std::optional<CheckpointPair> latest_checkpoint(const RunFiles &files);

// Writes the pair of `step` and makes it the latest (see RunFiles).
void save_checkpoint(const moas_model *model, const RunFiles &files, int step, const nlohmann::json &metadata);

// Loads a pair into a model built from the same settings; the optimizer must be at `step`.
void restore_checkpoint(moas_model *model, const CheckpointPair &pair, int step);

// After every save, and before a resumed run writes anything: deletes what DIR/latest does not name (the previous
// pair, what a killed save left, temporary files) and links DIR/model.safetensors to the latest weights when a kill
// came between the switch and the link.
void tidy_checkpoints(const RunFiles &files);

// Before a fresh run in a directory that held another (--overwrite, moas compare): deletes that run's checkpoints,
// DIR/latest before the pair it names, so that no kill leaves a checkpoint that the new run's log does not match.
void discard_checkpoints(const RunFiles &files);

}  // namespace moas_cli
