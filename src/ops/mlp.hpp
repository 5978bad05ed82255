// The MLP's nonlinearities: exact (erf) GELU, and SwiGLU's SiLU(a) * b. The linear layers around them are linear.hpp.
#pragma once

#include <cstdint>

#include "base/fast_math.hpp"
#include "base/hd.hpp"
#include "base/parallel.hpp"

namespace moas {

// The per-element arithmetic, shared with the CUDA kernels (cuda/mlp.cuh).
// GELU(x) = x * Phi(x), Phi the standard normal CDF.
template <typename T>
MOAS_HD inline T gelu(T x) {
  return (T)0.5 * x * ((T)1 + fast_erf(x * (T)0.70710678118654752440));
}

// GELU'(x) = Phi(x) + x * phi(x).
template <typename T>
MOAS_HD inline T gelu_derivative(T x) {
  const T cdf = (T)0.5 * ((T)1 + fast_erf(x * (T)0.70710678118654752440));
  const T pdf = (T)0.39894228040143267794 * fast_exp((T)-0.5 * x * x);
  return cdf + x * pdf;
}

// SiLU(a) * b.
template <typename T>
MOAS_HD inline T swiglu(T a, T b) {
  return a / ((T)1 + fast_exp(-a)) * b;
}

// The gradients of SiLU(a) * b with respect to a and b, from dy.
template <typename T>
MOAS_HD inline void swiglu_derivatives(T dy, T a, T b, T *da, T *db) {
  const T sig = (T)1 / ((T)1 + fast_exp(-a));
  const T silu = a * sig;
  *db = dy * silu;
  *da = dy * b * sig * ((T)1 + a * ((T)1 - sig));
}

// out = GELU(inp)                                                 [n]
template <typename T>
void gelu_forward(T *out, const T *inp, int64_t n) {
  parallel_for(n, n >= kParallelGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; i++) out[i] = gelu(inp[i]);
  });
}

// dinp = dout * GELU'(inp) (may alias dout).
template <typename T>
void gelu_backward(T *dinp, const T *dout, const T *inp, int64_t n) {
  parallel_for(n, n >= kParallelGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; i++) dinp[i] = dout[i] * gelu_derivative(inp[i]);
  });
}

// pre [N, 2h] holds c_fc(x) in columns [0, h) and c_up(x) in [h, 2h) (one fused GEMM); out [N, h] = SiLU(a) * b.
template <typename T>
void swiglu_forward(T *out, const T *pre, int64_t N, int64_t h) {
  parallel_for(N, N * h >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      const T *a = pre + n * 2 * h, *b = a + h;
      T *o = out + n * h;
#pragma omp simd
      for (int64_t i = 0; i < h; i++) o[i] = swiglu(a[i], b[i]);
    }
  });
}

// dpre [N, 2h] (overwritten) from dout [N, h].
template <typename T>
void swiglu_backward(T *dpre, const T *dout, const T *pre, int64_t N, int64_t h) {
  parallel_for(N, N * h >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      const T *a = pre + n * 2 * h, *b = a + h, *dy = dout + n * h;
      T *da = dpre + n * 2 * h, *db = da + h;
#pragma omp simd
      for (int64_t i = 0; i < h; i++) swiglu_derivatives(dy[i], a[i], b[i], da + i, db + i);
    }
  });
}

}  // namespace moas
