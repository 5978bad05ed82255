// Per-token routing decisions, shared by the CPU backend and the CUDA kernels: the argmax of MoAS top-1 and the
// top-K of MoH. Ties go to the lower index, so a decision never depends on evaluation order (LESSONS.md 3).
#pragma once

#include <cstdint>

#include "base/hd.hpp"

namespace moas {

template <typename T>
MOAS_HD inline int64_t argmax_lower(const T *v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

// selected[i] = 1 for the k largest of v[0, n), 0 otherwise; among equal values the lower index is taken first.
// O(n k): n is a head count.
template <typename T>
MOAS_HD inline void top_k_lower(const T *v, int64_t n, int64_t k, uint8_t *selected) {
  for (int64_t i = 0; i < n; ++i) selected[i] = 0;
  for (int64_t r = 0; r < k; ++r) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; ++i)
      if (!selected[i] && (best < 0 || v[i] > v[best])) best = i;
    selected[best] = 1;
  }
}

}  // namespace moas
