// Model and optimizer checkpoints as safetensors files laid out like the reference PyTorch model's state_dict.
#pragma once

#include <string>

#include "config/config.hpp"
#include "model/model.hpp"

namespace moas {

// Writes the weights (plus `lm_head.weight`, a copy of the tied wte), the config JSON, the library version and the
// caller's metadata (nullable) to path, through a temporary file and a rename.
void save_model(const Model<float> &model, const std::string &path, const char *user_metadata);

// Validates the whole file against the model first; on any failure (its own status) the model is unchanged.
void load_model(Model<float> &model, const std::string &path);

// The architecture a checkpoint describes (metadata "config").
ModelConfig read_checkpoint_config(const std::string &path);

// The metadata "user" of a checkpoint ("" when absent).
std::string read_user_metadata(const std::string &path);

// AdamW moments as `{param}.exp_avg` / `{param}.exp_avg_sq`, with the step and dropout counters in the metadata.
void save_optimizer(const Model<float> &model, const std::string &path);
void load_optimizer(Model<float> &model, const std::string &path);

}  // namespace moas
