// Causal scaled-dot-product attention for the CPU, tiled with an online softmax ("flash" style): memory is
// O(tile^2 + tile * head_dim) per thread, never O(T^2). Grouped-query attention (GQA, MQA as Hkv = 1, MHA as
// Hkv = H) indexes the shared kv head directly; K and V are never expanded to H heads.
//
// Both passes are deterministic: every output element is produced by one task in a fixed order, so results are
// bit-identical run to run and for any thread count.
#pragma once

#include <cstdint>

#include "dropout.hpp"

namespace moas {

struct AttentionShape {
  int64_t batch, seq, heads, kv_heads, head_dim;
};

// Strided views: row (b, t) of q starts at q + (b*seq + t) * q_stride and query head h occupies columns
// [h*head_dim, (h+1)*head_dim). k and v likewise with k_stride / v_stride; query head h reads kv head
// g = h / (heads / kv_heads). In the model q, k, v are column blocks of one fused [B*T, (H + 2*Hkv)*d]
// projection, so the strides are equal while the pointers differ.
template <typename T>
struct AttentionIO {
  const T *q;
  int64_t q_stride;
  const T *k;
  int64_t k_stride;
  const T *v;
  int64_t v_stride;
};

// out[b*T + i, h*d + c] = sum_j A_hij v[b*T + j, g*d + c] with A = softmax_j(q_i . k_j / sqrt(d), j <= i),
// out has row stride out_stride. lse[(b*H + h)*T + i] receives the log-sum-exp of row i's scaled scores, which
// backward needs. With dropout active, A is multiplied by mask/(1 - p) after normalisation (the normaliser uses
// the undropped probabilities, like torch's dropout after softmax); the mask element of (b, h, i, j) is
// ((b*H + h)*T + i)*T + j. Throws moas::Error on an inconsistent shape.
template <typename T>
void attention_forward(const AttentionShape &s, const AttentionIO<T> &in, T *out, int64_t out_stride, T *lse,
                       const Dropout &dropout);

// Gradients of a loss given dout = dL/dout (same layout as out). Overwrites every element of the head columns
// of dq, dk, dv (strided like q, k, v). dk and dv of kv head g sum over all query heads of its group. `out` and
// `lse` are the forward's results for the same inputs and the same dropout.
template <typename T>
void attention_backward(const AttentionShape &s, const AttentionIO<T> &in, const T *out, int64_t out_stride,
                        const T *lse, const T *dout, T *dq, int64_t dq_stride, T *dk, int64_t dk_stride, T *dv,
                        int64_t dv_stride, const Dropout &dropout);

}  // namespace moas
