// The MLP's nonlinearities: exact (erf) GELU, and SwiGLU's SiLU(a) * b. The linear layers around them are linear.hpp.
#pragma once

#include <cstdint>

#include "fast_math.hpp"
#include "parallel.hpp"

namespace moas {

// out = x * Phi(x), Phi the standard normal CDF.                  [n]
template <typename T>
void gelu_forward(T *out, const T *inp, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelGrain)
  for (int64_t i = 0; i < n; i++) {
    const T x = inp[i];
    out[i] = (T)0.5 * x * ((T)1 + fast_erf(x * (T)0.70710678118654752440));
  }
}

// dinp = dout * (Phi(x) + x * phi(x)).
template <typename T>
void gelu_backward(T *dinp, const T *dout, const T *inp, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelGrain)
  for (int64_t i = 0; i < n; i++) {
    const T x = inp[i];
    const T cdf = (T)0.5 * ((T)1 + fast_erf(x * (T)0.70710678118654752440));
    const T pdf = (T)0.39894228040143267794 * fast_exp((T)-0.5 * x * x);
    dinp[i] = dout[i] * (cdf + x * pdf);
  }
}

// pre [N, 2h] holds c_fc(x) in columns [0, h) and c_up(x) in [h, 2h) (one fused GEMM); out [N, h] = SiLU(a) * b.
template <typename T>
void swiglu_forward(T *out, const T *pre, int64_t N, int64_t h) {
#pragma omp parallel for schedule(static) if (N * h >= kParallelGrain)
  for (int64_t n = 0; n < N; n++) {
    const T *a = pre + n * 2 * h, *b = a + h;
    T *o = out + n * h;
#pragma omp simd
    for (int64_t i = 0; i < h; i++) o[i] = a[i] / ((T)1 + fast_exp(-a[i])) * b[i];
  }
}

// dpre [N, 2h] (overwritten) from dout [N, h].
template <typename T>
void swiglu_backward(T *dpre, const T *dout, const T *pre, int64_t N, int64_t h) {
#pragma omp parallel for schedule(static) if (N * h >= kParallelGrain)
  for (int64_t n = 0; n < N; n++) {
    const T *a = pre + n * 2 * h, *b = a + h, *dy = dout + n * h;
    T *da = dpre + n * 2 * h, *db = da + h;
#pragma omp simd
    for (int64_t i = 0; i < h; i++) {
      const T sig = (T)1 / ((T)1 + fast_exp(-a[i]));
      const T silu = a[i] * sig;
      db[i] = dy[i] * silu;
      da[i] = dy[i] * b[i] * sig * ((T)1 + a[i] * ((T)1 - sig));
    }
  }
}

}  // namespace moas
