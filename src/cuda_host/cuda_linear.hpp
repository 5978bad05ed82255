// linear.hpp's linear_forward / linear_backward on device memory, through the backend table: the bias rows, then one
// product (forward); the input gradient, the weight gradient and the bias column sums (backward).
#pragma once

#include <cstdint>

#include "cuda_host/cuda_backend.h"
#include "cuda_host/device_array.hpp"

namespace moas {

// out [N, n_out] (row stride out_stride) = inp [N, n_in] W^T + bias (bias may be null).
inline void cuda_linear_forward(const moas_cuda_backend &t, float *out, int64_t out_stride, const float *inp,
                                const float *weight, const float *bias, int64_t N, int64_t n_in, int64_t n_out) {
  if (bias) device_check(t, t.fill_rows(out, out_stride, bias, N, n_out, nullptr), "fill_rows");
  device_check(t,
               t.gemm(0, 1, N, n_out, n_in, 1.0f, inp, n_in, weight, n_in, bias ? 1.0f : 0.0f, out, out_stride,
                      nullptr),
               "gemm (linear forward)");
}

// dinp (overwritten, or accumulated) = dout W; dweight += dout^T inp; dbias += column sums of dout. dinp may be null.
inline void cuda_linear_backward(const moas_cuda_backend &t, float *dinp, bool accumulate_dinp, float *dweight,
                                 float *dbias, const float *dout, const float *inp, const float *weight, int64_t N,
                                 int64_t n_in, int64_t n_out) {
  if (dinp)
    device_check(t,
                 t.gemm(0, 0, N, n_in, n_out, 1.0f, dout, n_out, weight, n_in, accumulate_dinp ? 1.0f : 0.0f, dinp,
                        n_in, nullptr),
                 "gemm (linear input gradient)");
  device_check(t, t.gemm(1, 0, n_out, n_in, N, 1.0f, dout, n_out, inp, n_in, 1.0f, dweight, n_in, nullptr),
               "gemm (linear weight gradient)");
  if (dbias) device_check(t, t.column_sum_accumulate(dbias, dout, n_out, N, n_out, nullptr), "column sums");
}

}  // namespace moas
