// y = x W^T + b with W in nn.Linear layout [out, in]; every product through BLAS.
#pragma once

#include <algorithm>
#include <cstdint>

#include "base/gemm.hpp"
#include "base/packed_product.hpp"
#include "base/parallel.hpp"
#include "base/skinny_product.hpp"
#include "ops/decode_weights.hpp"

namespace moas {

// out [N, n_out] (row stride out_stride); inp [N, n_in]; bias may be null.
template <typename T>
void linear_forward(T *out, int64_t out_stride, const T *inp, const T *weight, const T *bias, int64_t N, int64_t n_in,
                    int64_t n_out) {
  if (bias) {
    parallel_for(N, N * n_out >= kParallelGrain, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; n++)
        for (int64_t o = 0; o < n_out; o++) out[n * out_stride + o] = bias[o];
    });
  }
  gemm(Trans::No, Trans::Yes, N, n_out, n_in, (T)1, inp, n_in, weight, n_in, bias ? (T)1 : (T)0, out, out_stride);
}

// The same in a decode step: with `decode` given and few rows, W is read from its packed copy (decode_weights.hpp).
template <typename T>
void linear_forward(T *out, int64_t out_stride, const T *inp, const T *weight, const T *bias, int64_t N, int64_t n_in,
                    int64_t n_out, DecodeWeights<T> *decode) {
  if (!decode || N > kSkinnyRows) {
    linear_forward(out, out_stride, inp, weight, bias, N, n_in, n_out);
    return;
  }
  // Packed on the first step even when no row uses it (a routed branch no token chose): the step where one first
  // does must not allocate.
  const PackedMatrix<T> &packed = decode->of(weight, n_out, n_in);
  if (N == 0) return;
  if (bias)
    for (int64_t n = 0; n < N; n++) std::copy(bias, bias + n_out, out + n * out_stride);
  packed_product(N, inp, n_in, packed, bias ? T(1) : T(0), out, out_stride);
}

// dinp (overwritten, or accumulated when accumulate_dinp) = dout W; dweight += dout^T inp; dbias += colsum(dout).
// dinp may be null when the input needs no gradient.
template <typename T>
void linear_backward(T *dinp, bool accumulate_dinp, T *dweight, T *dbias, const T *dout, const T *inp,
                     const T *weight, int64_t N, int64_t n_in, int64_t n_out) {
  if (dinp)
    gemm(Trans::No, Trans::No, N, n_in, n_out, (T)1, dout, n_out, weight, n_in, accumulate_dinp ? (T)1 : (T)0, dinp,
         n_in);
  gemm(Trans::Yes, Trans::No, n_out, n_in, N, (T)1, dout, n_out, inp, n_in, (T)1, dweight, n_in);
  if (dbias) column_sum_accumulate(dbias, dout, N, n_out);
}

}  // namespace moas
