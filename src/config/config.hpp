// The model configuration as the core sees it: the C struct's fields, validated once, in one place.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moas.h"

namespace moas {

enum class NormKind { LayerNorm = MOAS_NORM_LAYERNORM, RMSNorm = MOAS_NORM_RMSNORM };
enum class MlpKind { Gelu = MOAS_MLP_GELU, SwiGlu = MOAS_MLP_SWIGLU };
enum class PositionKind { Learned = MOAS_POSITION_LEARNED, Rope = MOAS_POSITION_ROPE, Cope = MOAS_POSITION_COPE };
enum class AttentionKind { Scheme = MOAS_ATTENTION_SCHEME, Moas = MOAS_ATTENTION_MOAS, Moh = MOAS_ATTENTION_MOH };
enum class MoasMode { Static = MOAS_MODE_STATIC, Soft = MOAS_MODE_SOFT, Top1 = MOAS_MODE_TOP1 };
enum class HeadStrategy {
  AllHeads = MOAS_HEADS_ALL,
  MixtureOfHeads = MOAS_HEADS_MIXTURE,
  StaticPruning = MOAS_HEADS_STATIC_PRUNING
};

struct MoasSettings {
  MoasMode mode = MoasMode::Soft;
  std::vector<int64_t> branch_kv_heads{6, 2, 1};  // resolved: never 0 here
  double aux_weight = 0.01;
  // The default three branches (MHA, GQA-2, MQA) keep the reference's checkpoint names mha/gqa/mqa.
  bool default_branches(int64_t n_head) const {
    return branch_kv_heads == std::vector<int64_t>{n_head, 2, 1};
  }
};

struct HeadSelection {
  HeadStrategy strategy = HeadStrategy::AllHeads;
  int64_t num_shared_heads = 0, num_active_routed_heads = 0, num_active_heads = 0;
  double load_balance_weight = 0.01;
  bool reference_gates = true;  // MOAS_MOH_GATES_REFERENCE, else the paper's
};

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
  int64_t cope_max_pos = 64;  // P of CoPE (used only with PositionKind::Cope)
  int64_t window = 0;         // sliding window w (SPEC §7); 0 = full causal
  uint64_t seed = 1337;
  int n_threads = 0;
  int device = MOAS_DEVICE_CPU;
  int device_index = 0;
  int matmul_precision = MOAS_MATMUL_FP32;  // MOAS_MATMUL_*: how a CUDA device runs the matrix products
  AttentionKind attention = AttentionKind::Scheme;
  MoasSettings moas;
  HeadSelection heads;

  int64_t head_dim() const { return n_embd / n_head; }
  // lambda of the load-balance loss the attention kind adds to the objective (0 when nothing is routed).
  double aux_weight() const;
};

// Fills a C config (up to its struct_size) with the defaults.
void fill_default(moas_model_config *cfg);

// Checks a C config and converts it; throws moas::Error(MOAS_ERR_INVALID_CONFIG / ABI_MISMATCH / DEVICE_UNAVAILABLE)
// naming the field and the fix.
ModelConfig validate(const moas_model_config &cfg);

// The inverse of validate, for moas_model_get_config.
void to_c(const ModelConfig &config, moas_model_config *out);

// The routing fields a model and a layer config share (moas_* and head_selection), for the attention kind that uses
// them; the other kind's fields keep what *out holds (the defaults).
template <class CConfig>
void routing_to_c(const ModelConfig &c, CConfig *out) {
  if (c.attention == AttentionKind::Moas) {
    out->moas_mode = (int32_t)c.moas.mode;
    out->moas_n_branches = (int32_t)c.moas.branch_kv_heads.size();
    for (int k = 0; k < MOAS_MAX_BRANCHES; k++)
      out->moas_branch_kv_heads[k] = k < out->moas_n_branches ? (int32_t)c.moas.branch_kv_heads[(size_t)k] : 0;
    out->moas_aux_weight = (float)c.moas.aux_weight;
  }
  if (c.attention == AttentionKind::Moh) {
    moas_head_selection &hs = out->head_selection;
    hs.strategy = (int32_t)c.heads.strategy;
    hs.num_shared_heads = (int32_t)c.heads.num_shared_heads;
    hs.num_active_routed_heads = (int32_t)c.heads.num_active_routed_heads;
    hs.num_active_heads = (int32_t)c.heads.num_active_heads;
    hs.load_balance_weight = (float)c.heads.load_balance_weight;
    hs.gate_variant = c.heads.reference_gates ? MOAS_MOH_GATES_REFERENCE : MOAS_MOH_GATES_PAPER;
  }
}

// The architecture as JSON (checkpoint metadata), and back. from_json validates like validate().
std::string to_json(const ModelConfig &config);
ModelConfig from_json(const std::string &json, const std::string &origin);

// Empty when `a` and `b` describe the same architecture (weights are interchangeable), else the first field that
// differs, with both values.
std::string architecture_difference(const ModelConfig &a, const ModelConfig &b);

}  // namespace moas
