// Attention of a token over a long cache (decoding): the cache is streamed in tiles of whole rows (every kv head's
// keys, then values), each kv head's part read once for all the query heads of its group, with a sequence's key range
// split into fixed parts that threads share (split-K, merged in order), so a batch of one sequence still uses every
// core and the result depends on neither the thread count nor the batch. attention_forward takes this path whenever
// every listed head has at most one row per sequence and no dropout applies; it computes what the tiled kernel does
// (attention.hpp), summed in another order.
#pragma once

#include <vector>

#include "attention/attention.hpp"

namespace moas {

// True when every listed head has at most one row per sequence.
template <typename T>
bool one_row_per_sequence(const AttentionDims &dims, const std::vector<QueryHead<T>> &heads);

// attention_forward's result for that shape (the dims and kv already checked), without dropout.
template <typename T>
void attention_decode(const AttentionDims &dims, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads);

}  // namespace moas
