// Causal attention with CoPE (contextual position encoding, SPEC §7) for the CPU. Query i of head h gates every key
// it sees, g_ij = sigmoid(q_i . k_j / sqrt(d)); the gates from key j up to i count j's position,
// p_ij = min(sum_{t=j..i} g_it, P - 1); and the logit gains q_i . e_h(p_ij), e_h interpolated between the P learned
// embeddings of the head: logit_ij = q_i . k_j / sqrt(d) + q_i . e_h(p_ij) (the position term unscaled, as the paper's
// code).
//
// A row's positions need the suffix sums of its gates over all its keys before any logit exists, so the tiled
// online softmax of attention.cpp cannot serve. This kernel works on chunks of a head's compact rows (one band of
// positions, as attention.cpp's) against every key the chunk sees at once: q . k and z_n = q . e_h[n] (computed once
// per row for the positions it can reach, then interpolated) as matrix products into O(chunk x (T + P)) scratch per
// thread (chunk x (w + chunk + P) with a window w; never T x T), then per row the gates, positions and softmax of
// cope_math.hpp, then A V as one more product. It takes the same query heads, row sets (dense or routed), key/value
// views (keys from first_key on, as a windowed KV cache holds them), sliding window and dropout mask as
// attention.hpp, and is deterministic in the same way: bit-identical for any thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/attention.hpp"

namespace moas {

// CoPE's embeddings of one attention block: e [H, P, d], head h's at e + h P d.
template <typename T>
struct CopeEmbeddings {
  const T *e;
  int64_t max_pos;  // P
};

// attention_forward's contract (out, lse per listed row; dropout after normalisation with the same mask elements)
// with CoPE's logits.
template <typename T>
void cope_attention_forward(const AttentionDims &dims, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads,
                            const CopeEmbeddings<T> &cope, const Dropout &dropout);

// attention_backward's contract (dq rows and the dk/dv rows of every kv head some listed head reads overwritten), and
// de [H, P, d] accumulated (+=) with the gradient of every listed head's embeddings.
template <typename T>
void cope_attention_backward(const AttentionDims &dims, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads,
                             const std::vector<QueryHeadGrad<T>> &grads, const KeyValueGrads<T> &dkv,
                             const CopeEmbeddings<T> &cope, T *de, const Dropout &dropout);

}  // namespace moas
