// The model configuration as the core sees it: the C struct's fields, validated once, in one place.
#pragma once

#include <cstdint>
#include <string>

#include "moas.h"

namespace moas {

enum class NormKind { LayerNorm = MOAS_NORM_LAYERNORM, RMSNorm = MOAS_NORM_RMSNORM };
enum class MlpKind { Gelu = MOAS_MLP_GELU, SwiGlu = MOAS_MLP_SWIGLU };
enum class PositionKind { Learned = MOAS_POSITION_LEARNED, Rope = MOAS_POSITION_ROPE };

struct ModelConfig {
  int64_t vocab_size = 65;
  int64_t block_size = 256;
  int64_t n_layer = 6;
  int64_t n_head = 6;
  int64_t n_kv_head = 6;
  int64_t n_embd = 384;
  int64_t mlp_hidden = 4 * 384;  // resolved: never 0 here
  NormKind norm = NormKind::LayerNorm;
  MlpKind mlp = MlpKind::Gelu;
  PositionKind position = PositionKind::Learned;
  bool bias = false;
  float dropout = 0.2f;
  bool attn_dropout = true;
  float rope_base = 10000.0f;
  uint64_t seed = 1337;
  int n_threads = 0;
  int device = MOAS_DEVICE_CPU;
  int device_index = 0;

  int64_t head_dim() const { return n_embd / n_head; }
  // Rows of the fused [q; k; v] projection: H query heads and Hkv key and value heads of head_dim each.
  int64_t qkv_width() const { return (n_head + 2 * n_kv_head) * head_dim(); }
};

// Fills a C config (up to its struct_size) with the defaults.
void fill_default(moas_model_config *cfg);

// Checks a C config and converts it; throws moas::Error(MOAS_ERR_INVALID_CONFIG / ABI_MISMATCH / DEVICE_UNAVAILABLE)
// naming the field and the fix.
ModelConfig validate(const moas_model_config &cfg);

// The inverse of validate, for moas_model_get_config.
void to_c(const ModelConfig &config, moas_model_config *out);

// The architecture as JSON (checkpoint metadata), and back. from_json validates like validate().
std::string to_json(const ModelConfig &config);
ModelConfig from_json(const std::string &json, const std::string &origin);

// Empty when `a` and `b` describe the same architecture (weights are interchangeable), else the first field that
// differs, with both values.
std::string architecture_difference(const ModelConfig &a, const ModelConfig &b);

}  // namespace moas
