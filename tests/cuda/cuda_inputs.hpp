// Random inputs shared by the CUDA tests (host emulation in test_cuda_ops.cpp, device runs in test_cuda_kernels.cpp).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace cuda_test {

// n values uniform in [lo, hi).
inline std::vector<float> uniform(size_t n, uint64_t seed, float lo = -2.0f, float hi = 2.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float &x : v) x = u(rng);
  return v;
}

// n token ids in [0, range).
inline std::vector<int32_t> tokens_below(size_t n, int32_t range, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t &x : t) x = (int32_t)(rng() % (uint64_t)range);
  return t;
}

}  // namespace cuda_test
