// Reference-faithful (GPT-2) initialisation drawn from a counter-based generator: element i of tensor k gets the
// same value on every platform, thread count and backend.
#pragma once

#include <cmath>
#include <cstdint>

#include "dropout.hpp"

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

}  // namespace moas
