// RAII and configuration helpers for tests of the public C ABI.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "moas.h"

namespace api_test {

struct ModelDeleter {
  void operator()(moas_model *m) const { moas_model_destroy(m); }
};
using ModelPtr = std::unique_ptr<moas_model, ModelDeleter>;

inline moas_model_config small_config() {
  moas_model_config c;
  c.struct_size = sizeof c;
  REQUIRE(moas_model_config_default(&c) == MOAS_OK);
  c.vocab_size = 13;
  c.block_size = 16;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.n_embd = 32;
  c.dropout = 0.0f;
  c.n_threads = 2;
  return c;
}

inline ModelPtr make_model(const moas_model_config &c) {
  moas_model *m = nullptr;
  const moas_status s = moas_model_create(&c, &m);
  INFO(moas_last_error());
  REQUIRE(s == MOAS_OK);
  return ModelPtr(m);
}

inline std::vector<int32_t> sequence(size_t n, int32_t vocab, uint32_t seed) {
  std::vector<int32_t> t(n);
  uint32_t x = seed * 2654435761u + 12345u;
  for (auto &v : t) {
    x = x * 1664525u + 1013904223u;
    v = (int32_t)((x >> 8) % (uint32_t)vocab);
  }
  return t;
}

inline std::vector<float> logits_of(moas_model *m, size_t n) {
  std::vector<float> out(n);
  REQUIRE(moas_logits(m, out.data(), out.size()) == MOAS_OK);
  return out;
}

// Every parameter's name, in enumeration order.
inline std::vector<std::string> parameter_names(const moas_model *m) {
  size_t count = 0;
  REQUIRE(moas_parameter_count(m, &count) == MOAS_OK);
  std::vector<std::string> names;
  for (size_t i = 0; i < count; i++) {
    moas_parameter_info info;
    info.struct_size = sizeof info;
    REQUIRE(moas_parameter_info_at(m, i, &info) == MOAS_OK);
    names.push_back(info.name);
  }
  return names;
}

inline std::vector<float> read_param(const moas_model *m, const char *name) {
  const std::vector<std::string> names = parameter_names(m);
  const auto it = std::find(names.begin(), names.end(), name);
  INFO("parameter " << name);
  REQUIRE(it != names.end());
  moas_parameter_info info;
  info.struct_size = sizeof info;
  REQUIRE(moas_parameter_info_at(m, (size_t)(it - names.begin()), &info) == MOAS_OK);
  std::vector<float> v(info.numel);
  REQUIRE(moas_parameter_read(m, name, v.data(), v.size()) == MOAS_OK);
  return v;
}

// All parameters, in enumeration order, as one vector.
inline std::vector<float> all_params(const moas_model *m) {
  size_t count = 0;
  REQUIRE(moas_parameter_count(m, &count) == MOAS_OK);
  std::vector<float> all;
  for (size_t i = 0; i < count; i++) {
    moas_parameter_info info;
    info.struct_size = sizeof info;
    REQUIRE(moas_parameter_info_at(m, i, &info) == MOAS_OK);
    std::vector<float> v(info.numel);
    REQUIRE(moas_parameter_read(m, info.name, v.data(), v.size()) == MOAS_OK);
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

// Trains `steps` AdamW steps (lr 3e-3, no weight decay) on the copy task: 7 symbols of 9, a separator, the same 7
// symbols again, with loss only where the copy can be known. Returns the first and last step's loss.
inline std::pair<float, float> train_copy_task(moas_model *model, int steps, uint32_t seed) {
  moas_adamw_config adamw;
  adamw.struct_size = sizeof adamw;
  REQUIRE(moas_adamw_config_default(&adamw) == MOAS_OK);
  adamw.lr = 3e-3f;
  adamw.weight_decay = 0.0f;
  const int B = 16, half = 7, Tn = 2 * half + 1, separator = 9;
  float first = 0, last = 0;
  for (int step = 0; step < steps; step++) {
    std::vector<int32_t> tokens, targets;
    const auto symbols = sequence((size_t)(B * half), 9, seed + (uint32_t)step);
    for (int b = 0; b < B; b++) {
      std::vector<int32_t> seq(symbols.begin() + b * half, symbols.begin() + (b + 1) * half);
      seq.push_back(separator);
      seq.insert(seq.end(), symbols.begin() + b * half, symbols.begin() + (b + 1) * half);
      for (int t = 0; t < Tn; t++) {
        tokens.push_back(seq[(size_t)t]);
        targets.push_back(t >= half && t < 2 * half ? seq[(size_t)t + 1] : -1);
      }
    }
    float loss = 0;
    REQUIRE(moas_zero_grad(model) == MOAS_OK);
    REQUIRE(moas_forward(model, tokens.data(), targets.data(), B, Tn, 1, &loss, nullptr) == MOAS_OK);
    REQUIRE(moas_backward(model) == MOAS_OK);
    REQUIRE(moas_optimizer_step(model, &adamw, nullptr) == MOAS_OK);
    if (step == 0) first = loss;
    last = loss;
  }
  return {first, last};
}

struct LayerDeleter {
  void operator()(moas_layer *l) const { moas_layer_destroy(l); }
};
using LayerPtr = std::unique_ptr<moas_layer, LayerDeleter>;

// A small layer: C = 32, 4 heads over 2 kv heads, sequences up to 16.
inline moas_layer_config layer_config() {
  moas_layer_config c;
  c.struct_size = sizeof c;
  REQUIRE(moas_layer_config_default(&c) == MOAS_OK);
  c.n_embd = 32;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.max_seq_len = 16;
  c.n_threads = 2;
  return c;
}

inline LayerPtr make_layer(const moas_layer_config &c) {
  moas_layer *l = nullptr;
  const moas_status s = moas_layer_create(&c, &l);
  INFO(moas_last_error());
  REQUIRE(s == MOAS_OK);
  return LayerPtr(l);
}

// All of a layer's parameters, in enumeration order, as one vector.
inline std::vector<float> layer_weights(const moas_layer *l) {
  size_t count = 0;
  REQUIRE(moas_layer_parameter_count(l, &count) == MOAS_OK);
  std::vector<float> all;
  for (size_t i = 0; i < count; i++) {
    moas_parameter_info info;
    info.struct_size = sizeof info;
    REQUIRE(moas_layer_parameter_info_at(l, i, &info) == MOAS_OK);
    std::vector<float> v((size_t)info.numel);
    REQUIRE(moas_layer_parameter_read(l, info.name, v.data(), v.size()) == MOAS_OK);
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::vector<float> v(n);
  uint32_t s = seed * 747796405u + 1u;
  for (auto &x : v) {
    s = s * 1664525u + 1013904223u;
    x = scale * ((float)(s >> 8) / 8388608.0f - 1.0f);
  }
  return v;
}

// A unique scratch directory, removed with the object.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("moas_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string &name) const { return (path / name).string(); }
};

}  // namespace api_test
