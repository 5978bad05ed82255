// Tiny model configurations and inputs shared by the internal model tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "ops/init.hpp"
#include "ops/params.hpp"

namespace moas_test {

struct NamedConfig {
  std::string name;
  moas::ModelConfig config;
};

inline moas::ModelConfig tiny_config(int64_t heads, int64_t kv_heads, int64_t width) {
  moas::ModelConfig c;
  c.vocab_size = 11;
  c.block_size = 8;
  c.n_layer = 2;
  c.n_head = heads;
  c.n_kv_head = kv_heads;
  c.n_embd = width;
  c.mlp_hidden = 2 * width;
  c.dropout = 0.0f;
  c.seed = 7;
  return c;
}

// One configuration per model option (and the non-square GQA ratios LESSONS.md asks for).
inline std::vector<NamedConfig> option_configs() {
  std::vector<NamedConfig> out;
  out.push_back({"MHA LayerNorm GELU learned", tiny_config(4, 4, 16)});
  moas::ModelConfig gqa = tiny_config(4, 2, 16);
  gqa.bias = true;
  out.push_back({"GQA 4/2 with biases", gqa});
  moas::ModelConfig mqa = tiny_config(4, 1, 16);
  mqa.norm = moas::NormKind::RMSNorm;
  mqa.mlp = moas::MlpKind::SwiGlu;
  mqa.position = moas::PositionKind::Rope;
  out.push_back({"MQA RMSNorm SwiGLU RoPE", mqa});
  moas::ModelConfig gqa_ratio3 = tiny_config(6, 2, 24);
  gqa_ratio3.position = moas::PositionKind::Rope;
  gqa_ratio3.bias = true;
  out.push_back({"GQA 6/2 RoPE biases", gqa_ratio3});
  for (int64_t kv : {4, 3}) out.push_back({"GQA 12/" + std::to_string(kv), tiny_config(12, kv, 24)});
  moas::ModelConfig dropout = tiny_config(4, 2, 16);
  dropout.dropout = 0.3f;
  out.push_back({"GQA 4/2 dropout 0.3 everywhere", dropout});
  moas::ModelConfig swiglu_bias = tiny_config(4, 4, 16);
  swiglu_bias.mlp = moas::MlpKind::SwiGlu;
  swiglu_bias.bias = true;
  swiglu_bias.attn_dropout = false;
  swiglu_bias.dropout = 0.2f;
  out.push_back({"MHA SwiGLU biases, dropout without attention dropout", swiglu_bias});
  return out;
}

inline moas::ModelConfig moas_config(moas::MoasMode mode, std::vector<int64_t> branches, int64_t heads = 4,
                                     int64_t width = 16) {
  moas::ModelConfig c = tiny_config(heads, heads, width);
  c.attention = moas::AttentionKind::Moas;
  c.moas.mode = mode;
  c.moas.branch_kv_heads = std::move(branches);
  return c;
}

inline moas::ModelConfig moh_config(int64_t heads, int64_t kv_heads, int64_t width, int64_t shared, int64_t active) {
  moas::ModelConfig c = tiny_config(heads, kv_heads, width);
  c.attention = moas::AttentionKind::Moh;
  c.heads.strategy = moas::HeadStrategy::MixtureOfHeads;
  c.heads.num_shared_heads = shared;
  c.heads.num_active_routed_heads = active;
  return c;
}

inline moas::ModelConfig static_pruning_config(int64_t heads, int64_t kv_heads, int64_t width, int64_t active) {
  moas::ModelConfig c = tiny_config(heads, kv_heads, width);
  c.attention = moas::AttentionKind::Moh;
  c.heads.strategy = moas::HeadStrategy::StaticPruning;
  c.heads.num_active_heads = active;
  return c;
}

// One configuration per MoAS mode and MoH strategy, with the options they interact with (GQA, RoPE, biases,
// dropout on gates and attention, shared/routed splits that create or omit each router).
inline std::vector<NamedConfig> routed_configs() {
  using moas::MoasMode;
  std::vector<NamedConfig> out;
  out.push_back({"MoAS static MHA/GQA-2/MQA", moas_config(MoasMode::Static, {4, 2, 1})});
  moas::ModelConfig soft = moas_config(MoasMode::Soft, {4, 2, 1});
  soft.bias = true;
  out.push_back({"MoAS soft with biases", soft});
  out.push_back({"MoAS top1", moas_config(MoasMode::Top1, {4, 2, 1})});
  moas::ModelConfig custom = moas_config(MoasMode::Top1, {3, 1}, 6, 24);
  custom.position = moas::PositionKind::Rope;
  custom.norm = moas::NormKind::RMSNorm;
  out.push_back({"MoAS top1 two branches RoPE RMSNorm", custom});
  moas::ModelConfig four = moas_config(MoasMode::Soft, {4, 4, 2, 1});
  four.dropout = 0.3f;
  out.push_back({"MoAS soft four branches, dropout 0.3 (gates too)", four});
  moas::ModelConfig top1_drop = moas_config(MoasMode::Top1, {4, 2, 1});
  top1_drop.dropout = 0.3f;
  out.push_back({"MoAS top1 dropout 0.3", top1_drop});
  out.push_back({"MoH 1 shared + 2 of 3", moh_config(4, 4, 16, 1, 2)});
  moas::ModelConfig routed_only = moh_config(4, 2, 16, 0, 2);
  routed_only.position = moas::PositionKind::Rope;
  out.push_back({"MoH routed only 2 of 4, GQA 4/2, RoPE", routed_only});
  moas::ModelConfig two_shared = moh_config(6, 3, 24, 2, 2);
  two_shared.bias = true;
  out.push_back({"MoH 2 shared + 2 of 4, GQA 6/3, biases", two_shared});
  moas::ModelConfig paper = moh_config(4, 4, 16, 1, 2);
  paper.heads.reference_gates = false;
  out.push_back({"MoH paper gates 1 + 2 of 3", paper});
  moas::ModelConfig moh_drop = moh_config(4, 1, 16, 1, 1);
  moh_drop.dropout = 0.3f;
  out.push_back({"MoH 1 shared + 1 of 3, MQA, dropout 0.3", moh_drop});
  out.push_back({"StaticPruning 3 of 4, GQA 4/2", static_pruning_config(4, 2, 16, 3)});
  out.push_back({"StaticPruning 1 of 6, GQA 6/3", static_pruning_config(6, 3, 24, 1)});
  return out;
}

// CoPE and sliding windows (SPEC §7) across the attention kinds. CoPE's P is small enough that late tokens reach
// the clamp P - 1.
inline std::vector<NamedConfig> position_configs() {
  using moas::MoasMode;
  auto cope = [](moas::ModelConfig c, int64_t max_pos) {
    c.position = moas::PositionKind::Cope;
    c.cope_max_pos = max_pos;
    return c;
  };
  auto window = [](moas::ModelConfig c, int64_t w) {
    c.window = w;
    return c;
  };
  moas::ModelConfig gqa_bias = tiny_config(4, 2, 16);
  gqa_bias.bias = true;
  moas::ModelConfig dropout = tiny_config(4, 2, 16);
  dropout.dropout = 0.3f;
  return {
      {"CoPE MHA", cope(tiny_config(4, 4, 16), 4)},
      {"CoPE GQA 4/2 with biases", cope(gqa_bias, 8)},
      {"CoPE MoAS static", cope(moas_config(MoasMode::Static, {4, 2, 1}), 4)},
      {"CoPE MoAS soft", cope(moas_config(MoasMode::Soft, {4, 2, 1}), 4)},
      {"CoPE MoAS top1", cope(moas_config(MoasMode::Top1, {4, 2, 1}), 4)},
      {"CoPE MoH 1 shared + 2 of 3, GQA 4/2", cope(moh_config(4, 2, 16, 1, 2), 4)},
      {"CoPE StaticPruning 3 of 4, GQA 4/2", cope(static_pruning_config(4, 2, 16, 3), 4)},
      {"window 2, GQA 4/2", window(tiny_config(4, 2, 16), 2)},
      {"window 1, MoAS top1", window(moas_config(MoasMode::Top1, {4, 2, 1}), 1)},
      {"window 2, MoH routed only 2 of 4, GQA 4/2", window(moh_config(4, 2, 16, 0, 2), 2)},
      {"CoPE + window 3, MoH 1 shared + 2 of 3, GQA 4/2", window(cope(moh_config(4, 2, 16, 1, 2), 4), 3)},
      {"CoPE + window 2, GQA 4/2, dropout 0.3", window(cope(dropout, 4), 2)},
  };
}

// CoPE embeddings start at zero (SPEC §7), where the position term vanishes: tests give them N(0, 1) values.
template <typename T>
void randomise_cope_embeddings(moas::ParamTable<T> &params) {
  for (const moas::ParamInfo &info : params.infos())
    if (info.name.find(".cope.") != std::string::npos)
      for (int64_t i = 0; i < info.numel; i++)
        params.values[(size_t)(info.offset + i)] = (T)moas::normal_sample(99, (uint64_t)info.offset, (uint64_t)i);
}

inline std::vector<int32_t> tokens_for(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> t((size_t)n);
  for (int64_t i = 0; i < n; i++) t[(size_t)i] = (int32_t)((seed * 2654435761u + (uint64_t)i * 40503u) % vocab);
  return t;
}

}  // namespace moas_test
