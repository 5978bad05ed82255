// Uniform floats in [-1, 1) from a seed: the operands of the few-row product tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace ops_test {

inline std::vector<float> random_floats(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float &x : v) x = u(rng);
  return v;
}

}  // namespace ops_test
