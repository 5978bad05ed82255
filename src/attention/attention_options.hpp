// SPEC §7's options of one attention block — a sliding window and CoPE — and the kernel they call for: the tiled
// one of attention.hpp, or CoPE's (cope_attention.hpp). Every block kind (one scheme, MoAS, MoH) attends through
// here, so each option reaches all three the same way.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attention/attention.hpp"
#include "attention/cope_attention.hpp"
#include "config/config.hpp"
#include "ops/params.hpp"

namespace moas {

struct AttentionOptions {
  int64_t window = 0;        // sliding window w; 0 = full causal
  int64_t cope = -1;         // offset of the block's attn.cope.weight [H, P, d]; -1 without CoPE
  int64_t cope_max_pos = 0;  // P
};

// The window of `config` and, with CoPE, its embeddings registered as `prefix` + "cope.weight". Called after the
// block has registered its other tensors, so those keep the order (and initialisation streams) they have without
// CoPE.
template <typename T>
AttentionOptions register_attention_options(ParamTable<T> &params, const std::string &prefix,
                                            const ModelConfig &config) {
  AttentionOptions options;
  options.window = config.window;
  if (config.position == PositionKind::Cope) {
    options.cope_max_pos = config.cope_max_pos;
    options.cope = params.add(prefix + "cope.weight", {config.n_head, config.cope_max_pos, config.head_dim()});
  }
  return options;
}

// attention_forward / attention_backward (dims without the window: the options supply it), or their CoPE
// counterparts, whose backward also accumulates into the gradient of attn.cope.weight.
template <typename T>
void attend_forward(const ParamTable<T> &params, const AttentionOptions &options, AttentionDims dims,
                    const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads, const Dropout &dropout) {
  dims.window = options.window;
  if (options.cope < 0) return attention_forward(dims, kv, heads, dropout);
  cope_attention_forward(dims, kv, heads, CopeEmbeddings<T>{params.value(options.cope), options.cope_max_pos},
                         dropout);
}

template <typename T>
void attend_backward(ParamTable<T> &params, const AttentionOptions &options, AttentionDims dims,
                     const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads,
                     const std::vector<QueryHeadGrad<T>> &grads, const KeyValueGrads<T> &dkv,
                     const Dropout &dropout) {
  dims.window = options.window;
  if (options.cope < 0) return attention_backward(dims, kv, heads, grads, dkv, dropout);
  cope_attention_backward(dims, kv, heads, grads, dkv,
                          CopeEmbeddings<T>{params.value(options.cope), options.cope_max_pos},
                          params.grad(options.cope), dropout);
}

}  // namespace moas
