// Causal scaled-dot-product attention for the CPU, tiled with an online softmax ("flash" style): memory is
// O(tile^2 + tile * head_dim) per thread, never O(T^2).
//
// One kernel serves dense and routed attention: every query head brings its own RowSet (which tokens it computes,
// compact), so MoAS top-1 branches and MoH routed heads compute only their selected rows, against all keys, with the
// causal mask taken from each row's original position. Grouped-query attention (GQA; MQA as Hkv = 1, MHA as
// Hkv = H) indexes the shared kv head; K and V are never expanded to H heads.
//
// Both passes are deterministic: every output element is produced by one task in a fixed order, so results are
// bit-identical run to run and for any thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/dropout.hpp"
#include "ops/rows.hpp"

namespace moas {

struct AttentionDims {
  int64_t batch;     // sequences
  int64_t seq;       // positions per sequence: every query and key position is below seq
  int64_t heads;     // H, the scheme's query heads (with kv_heads it fixes the GQA map and the dropout streams)
  int64_t kv_heads;  // Hkv, dividing H
  int64_t head_dim;  // d
  int64_t window = 0;  // sliding window w (SPEC §7): query i sees keys i - w .. i; 0 = every earlier key
};

// Key (b, j) of kv head g is at k + (b * seq_stride + j - first_key) * k_stride + g * d; values likewise. A sequence
// holds the keys first_key .. first_key + seq_stride - 1: all of them in a training batch, the last ones of a
// windowed KV cache (kv_cache.hpp), whose older keys no query's window reaches.
template <typename T>
struct KeyValues {
  const T *k;
  int64_t k_stride;
  const T *v;
  int64_t v_stride;
  int64_t seq_stride;     // rows from one sequence to the next (seq for a training batch)
  int64_t first_key = 0;  // the position of each sequence's first row
};

template <typename T>
struct KeyValueGrads {  // laid out like KeyValues, same seq_stride (and first_key 0: every key is held)
  T *dk;
  int64_t dk_stride;
  T *dv;
  int64_t dv_stride;
};

// The queries of one head: compact row r (token rows->row[r]) has its q at q + r * q_stride (head_dim values), its
// output at out + r * out_stride and its log-sum-exp at lse[r].
template <typename T>
struct QueryHead {
  int64_t head;  // h in [0, H)
  const RowSet *rows;
  const T *q;
  int64_t q_stride;
  T *out;
  int64_t out_stride;
  T *lse;
};

template <typename T>
struct QueryHeadGrad {  // compact like its QueryHead
  const T *dout;
  int64_t dout_stride;
  T *dq;
  int64_t dq_stride;
};

// out_r = sum_j A_rj v_j with A = softmax_j(q_r . k_j / sqrt(d)) over pos_r - w <= j <= pos_r (0 <= j <= pos_r
// without a window), for every listed head; key tiles wholly before a query chunk's windows are never visited. With
// dropout active, A is multiplied by mask / (1 - p) after normalisation (the normaliser uses the undropped
// probabilities, like torch's dropout after softmax); the mask element of (b, h, i, j) is
// ((b * H + h) * seq + i) * seq + j whatever rows are computed. Throws moas::Error on an inconsistent shape.
template <typename T>
void attention_forward(const AttentionDims &dims, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads,
                       const Dropout &dropout);

// Gradients given dout of every listed head: overwrites that head's dq rows and, for every kv head read by at least
// one listed head, every dk/dv row of every sequence (summed over the query heads of its group, in a fixed order).
// kv heads no listed head reads are not written. `heads` carries the forward's out and lse; kv holds every key
// (first_key 0).
template <typename T>
void attention_backward(const AttentionDims &dims, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads,
                        const std::vector<QueryHeadGrad<T>> &grads, const KeyValueGrads<T> &dkv,
                        const Dropout &dropout);

// Throws moas::Error unless the dims are consistent, every listed head fits them and kv holds every key the listed
// rows see (also CoPE's kernel's check).
template <typename T>
void check_attention_dims(const AttentionDims &dims, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads);

}  // namespace moas
