// Whether a buffer holds only finite values: the check every call makes before it returns a result or takes an input.
#pragma once

#include <cstddef>

namespace moas {

// x - x is +0 for a finite x and NaN for Inf or NaN, so one vectorised sum (no fast-math here) tells: 0 or NaN.
template <typename T>
bool all_finite(const T *values, size_t len) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (size_t i = 0; i < len; i++) sum += values[i] - values[i];
  return sum == 0;
}

}  // namespace moas
