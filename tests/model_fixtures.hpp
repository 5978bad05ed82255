// Tiny model configurations and inputs shared by the internal model tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config.hpp"

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

inline std::vector<int32_t> tokens_for(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> t((size_t)n);
  for (int64_t i = 0; i < n; i++) t[(size_t)i] = (int32_t)((seed * 2654435761u + (uint64_t)i * 40503u) % vocab);
  return t;
}

}  // namespace moas_test
