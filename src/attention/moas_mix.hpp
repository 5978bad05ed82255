// MoAS's mixing y = sum_k w_k z_k (moas.hpp) backward for one token of one branch, shared by the CPU backend and the
// CUDA kernel (cuda/moas_mix.cuh): the gradient of the weight is dot(dz, z), summed over the columns in order, and
// the branch's output gradient becomes w dz.
#pragma once

#include <cstdint>

#include "base/hd.hpp"

namespace moas {

// dz [width] *= w in place; returns d w = sum_c dz[c] z[c] of the incoming dz.
template <typename T>
MOAS_HD inline T moas_mix_row_backward(T *dz, const T *z, T w, int64_t width) {
  T dot = 0;
  for (int64_t c = 0; c < width; c++) dot += dz[c] * z[c];
  for (int64_t c = 0; c < width; c++) dz[c] *= w;
  return dot;
}

}  // namespace moas
