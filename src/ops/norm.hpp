// LayerNorm (optional bias) and RMSNorm over the last dimension, eps 1e-5. Forward keeps per-row mean (LayerNorm)
// and reciprocal std for backward.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "base/hd.hpp"
#include "base/parallel.hpp"

namespace moas {

constexpr double kNormEps = 1e-5;

// The per-row arithmetic, shared with the CUDA kernels (cuda/norm.cuh), which reduce the sums in another order.
// 1 / std from the sum of squared deviations of a row of C values.
template <typename T>
MOAS_HD inline T norm_rstd(T sum_sq, int64_t C) {
  return (T)1 / std::sqrt(sum_sq / (T)C + (T)kNormEps);
}

// d/dx of one element: rs (g - mean(g) - xhat mean(g xhat)) with g = dy * weight (g_mean 0 for RMSNorm).
template <typename T>
MOAS_HD inline T norm_input_grad(T dy, T weight, T xhat, T rs, T g_mean, T gx_mean) {
  return rs * (dy * weight - g_mean - xhat * gx_mean);
}

// out [N, C]; mean [N] (unused for RMSNorm); rstd [N]. bias may be null.
template <typename T>
void norm_forward(bool rms, T *out, T *mean, T *rstd, const T *inp, const T *weight, const T *bias, int64_t N,
                  int64_t C) {
  parallel_for(N, N * C >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      const T *x = inp + n * C;
      T mu = 0;
      if (!rms) {
        for (int64_t c = 0; c < C; c++) mu += x[c];
        mu /= (T)C;
      }
      T var = 0;
      for (int64_t c = 0; c < C; c++) var += (x[c] - mu) * (x[c] - mu);
      const T rs = norm_rstd(var, C);
      T *o = out + n * C;
      for (int64_t c = 0; c < C; c++) o[c] = (x[c] - mu) * rs * weight[c] + (bias ? bias[c] : (T)0);
      mean[n] = mu;
      rstd[n] = rs;
    }
  });
}

// dinp += d/dx; dweight += sum_n dout * xhat; dbias += sum_n dout (dbias may be null).
// scratch must hold N * C elements.
template <typename T>
void norm_backward(bool rms, T *dinp, T *dweight, T *dbias, T *scratch, const T *dout, const T *inp,
                   const T *weight, const T *mean, const T *rstd, int64_t N, int64_t C) {
  parallel_for(N, N * C >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      const T *x = inp + n * C, *dy = dout + n * C;
      const T mu = mean[n], rs = rstd[n];
      // g = dy * weight; dx = rs * (g - mean(g) - xhat * mean(g * xhat)), without the mean(g) term for RMSNorm.
      T g_mean = 0, gx_mean = 0;
      for (int64_t c = 0; c < C; c++) {
        const T g = dy[c] * weight[c];
        g_mean += g;
        gx_mean += g * (x[c] - mu) * rs;
      }
      g_mean = rms ? (T)0 : g_mean / (T)C;
      gx_mean /= (T)C;
      T *dx = dinp + n * C, *prod = scratch + n * C;
      for (int64_t c = 0; c < C; c++) {
        const T xhat = (x[c] - mu) * rs;
        dx[c] += norm_input_grad(dy[c], weight[c], xhat, rs, g_mean, gx_mean);
        prod[c] = dy[c] * xhat;
      }
    }
  });
  column_sum_accumulate(dweight, scratch, N, C);
  if (dbias) column_sum_accumulate(dbias, dout, N, C);
}

}  // namespace moas
