// Reference-faithful (GPT-2) initialisation drawn from a counter-based generator: element i of tensor k gets the
// same value on every platform, thread count and backend.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "ops/dropout.hpp"
#include "ops/params.hpp"

namespace moas {

// A standard normal sample for (seed, stream, index), by Box–Muller on two 53-bit uniforms.
inline double normal_sample(uint64_t seed, uint64_t stream, uint64_t index) {
  const uint64_t base = mix64(mix64(seed ^ 0x5EEDull) ^ stream);
  const uint64_t a = mix64(base ^ (2 * index)), b = mix64(base ^ (2 * index + 1));
  const double u1 = ((double)(a >> 11) + 1.0) * (1.0 / 9007199254740993.0);  // (0, 1]
  const double u2 = (double)(b >> 11) * (1.0 / 9007199254740992.0);          // [0, 1)
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

template <typename T>
void init_normal(T *values, int64_t n, double std, uint64_t seed, uint64_t stream) {
  for (int64_t i = 0; i < n; i++) values[i] = (T)(std * normal_sample(seed, stream, (uint64_t)i));
}

// GPT-2 by name: weights N(0, 0.02), residual projections (c_proj) N(0, 0.02 / sqrt(2 n_layer)), biases 0, norm
// gains 1, CoPE position embeddings 0 (SPEC §7). Tensor k draws from stream k, so a model and a layer with the same
// tensors in the same order start equal.
template <typename T>
void initialise_parameters(ParamTable<T> &params, int64_t n_layer, uint64_t seed) {
  const double residual_std = 0.02 / std::sqrt(2.0 * (double)n_layer);
  auto has = [](const std::string &name, const char *part) { return name.find(part) != std::string::npos; };
  uint64_t stream = 0;
  for (const ParamInfo &info : params.infos()) {
    T *v = params.values.data() + info.offset;
    const bool is_bias = info.name.size() > 5 && info.name.compare(info.name.size() - 5, 5, ".bias") == 0;
    if (is_bias || has(info.name, ".cope.")) std::fill(v, v + info.numel, T(0));
    else if (has(info.name, ".ln_")) std::fill(v, v + info.numel, T(1));
    else init_normal(v, info.numel, has(info.name, "c_proj.weight") ? residual_std : 0.02, seed, stream);
    stream++;
  }
}

}  // namespace moas
