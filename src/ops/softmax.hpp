// Row softmax and its backward, for router gates (always in the model's scalar type: fp32, or fp64 in checks).
#pragma once

#include <cmath>
#include <cstdint>

#include "base/fast_math.hpp"
#include "base/hd.hpp"
#include "base/parallel.hpp"

namespace moas {

// y = softmax(x) over `width` values (y may be x): one router row, shared with the CUDA router kernel.
template <typename T>
MOAS_HD inline void softmax_row(T *y, const T *x, int64_t width) {
  T mx = x[0];
  for (int64_t i = 1; i < width; i++) mx = x[i] > mx ? x[i] : mx;
  T sum = 0;
  for (int64_t i = 0; i < width; i++) sum += (y[i] = fast_exp(x[i] - mx));
  for (int64_t i = 0; i < width; i++) y[i] /= sum;
}

// out[n, :] = softmax(in[n, :]) over `width` columns; rows are independent. Row n of in starts at in + n *
// in_stride, of out at out + n * out_stride (routers that share one product keep their logits side by side).
template <typename T>
void softmax_rows(T *out, int64_t out_stride, const T *in, int64_t in_stride, int64_t N, int64_t width) {
  parallel_for(N, N * width >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) softmax_row(out + n * out_stride, in + n * in_stride, width);
  });
}

// dlogits[n, i] = p_i (dp_i - sum_j p_j dp_j) (overwritten; row stride dlogits_stride; may alias dp). p and dp
// are [N, width].
template <typename T>
void softmax_rows_backward(T *dlogits, int64_t dlogits_stride, const T *dp, const T *p, int64_t N, int64_t width) {
  parallel_for(N, N * width >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      const T *pn = p + n * width, *gn = dp + n * width;
      T inner = 0;
      for (int64_t i = 0; i < width; i++) inner += pn[i] * gn[i];
      T *d = dlogits + n * dlogits_stride;
      for (int64_t i = 0; i < width; i++) d[i] = pn[i] * (gn[i] - inner);
    }
  });
}

}  // namespace moas
