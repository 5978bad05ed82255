// Model, layer and optimizer checkpoints as safetensors files laid out like the reference PyTorch model's state_dict.
#pragma once

#include <string>

#include "config/config.hpp"
#include "model/layer.hpp"
#include "model/model.hpp"

namespace moas {

// Writes the weights (plus `lm_head.weight`, a copy of the tied wte), the config JSON, the library version and the
// caller's metadata (nullable) to path, through a temporary file and a rename.
void save_model(const Model<float> &model, const std::string &path, const char *user_metadata);

// Validates the whole file against the model first; on any failure (its own status) the model is unchanged.
void load_model(Model<float> &model, const std::string &path);

// The architecture a model checkpoint describes (metadata "config").
ModelConfig read_checkpoint_config(const std::string &path);

// The metadata "user" of a checkpoint ("" when absent).
std::string read_user_metadata(const std::string &path);

// AdamW moments as `{param}.exp_avg` / `{param}.exp_avg_sq`, with the step and dropout counters in the metadata.
void save_optimizer(const Model<float> &model, const std::string &path);
void load_optimizer(Model<float> &model, const std::string &path);

// The same for the attention layer alone. A layer checkpoint also records the residual flag (metadata "layer"), which
// tells the two kinds apart: neither loads as the other.
struct LayerCheckpointConfig {
  ModelConfig config;
  bool residual;
};
void save_layer(const AttentionLayer<float> &layer, const std::string &path, const char *user_metadata);
void load_layer(AttentionLayer<float> &layer, const std::string &path);
LayerCheckpointConfig read_layer_checkpoint_config(const std::string &path);
void save_layer_optimizer(const AttentionLayer<float> &layer, const std::string &path);
void load_layer_optimizer(AttentionLayer<float> &layer, const std::string &path);

}  // namespace moas
