// Causal attention with CoPE (contextual position encoding, SPEC §7) for the CPU. Query i of head h gates every key
// it sees, g_ij = sigmoid(q_i . k_j / sqrt(d)); the gates from key j up to i count j's position,
// p_ij = min(sum_{t=j..i} g_it, P - 1); and the logit gains q_i . e_h(p_ij), e_h interpolated between the P learned
// embeddings of the head: logit_ij = q_i . k_j / sqrt(d) + q_i . e_h(p_ij) (the position term unscaled, as the paper's
// code).
//
// A row's positions need the suffix sums of its gates over all its keys before any logit exists, so the tiled
// online softmax of attention.cpp cannot serve: this kernel works row by row with O(T + P) scratch per thread
// (O(w + P) with a window w; never T x T), computing z_n = q_i . e_h[n] once per row and interpolating it. It takes
// the same query heads, row sets (dense or routed), key/value views (keys from first_key on, as a windowed KV cache
// holds them), sliding window and dropout mask as attention.hpp, and is deterministic in the same way: bit-identical
// for any thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "attention.hpp"

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
