// What an attention block needs to know about the forward it is part of, besides its input.
#pragma once

#include <cstdint>

#include "attention/kv_cache.hpp"
#include "ops/decode_weights.hpp"
#include "ops/dropout.hpp"
#include "ops/rope.hpp"
#include "ops/rows.hpp"

namespace moas {

template <typename T>
struct BlockContext {
  int64_t batch = 0, seq = 0;        // the input is [batch * seq, C]: seq new positions per sequence
  const RowSet *all_rows = nullptr;  // every new token, with its absolute position
  LayerCache<T> *cache = nullptr;    // decoding: keys and values of earlier positions, extended by this forward
  int64_t past = 0;                  // positions already in the cache (the first new token's position)
  DecodeWeights<T> *decode = nullptr;  // a decode step (cache, <= kSkinnyRows tokens): the weights re-laid for it
  const RopeTable<T> *rope = nullptr;  // null without RoPE
  float dropout = 0.0f;              // p of this forward (0 in eval)
  bool attn_dropout = false;         // also drop attention probabilities
  uint64_t seed = 0, step = 0;       // dropout masks are keyed by (seed, step, layer, site, element)
  uint32_t layer = 0;

  Dropout site(uint32_t id) const { return Dropout::at(dropout, seed, step, layer, id); }
  int64_t tokens() const { return batch * seq; }
  int64_t key_length() const { return past + seq; }  // key positions per sequence so far (the cache may hold fewer)
};

}  // namespace moas
