// Token + learned position embeddings (wpe is null with RoPE and CoPE, which position inside attention).
#pragma once

#include <cstdint>

#include "base/parallel.hpp"

namespace moas {

// out[b,t,:] = wte[tokens[b,t],:] + wpe[past + t,:]                out [B*T, C]
// (past > 0 when decoding continues sequences whose first `past` positions are cached).
template <typename T>
void embedding_forward(T *out, const int32_t *tokens, const T *wte, const T *wpe, int64_t B, int64_t Tn, int64_t C,
                       int64_t past = 0) {
  parallel_for(B * Tn, B * Tn * C >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      const T *tok = wte + (int64_t)tokens[n] * C;
      T *o = out + n * C;
      if (wpe) {
        const T *pos = wpe + (past + n % Tn) * C;
        for (int64_t c = 0; c < C; c++) o[c] = tok[c] + pos[c];
      } else {
        for (int64_t c = 0; c < C; c++) o[c] = tok[c];
      }
    }
  });
}

// dwte[tokens[n]] += dout[n]; dwpe[t] += dout[b,t]. Threads split the columns and every thread walks the rows in
// order, so repeated tokens accumulate in a fixed order.
template <typename T>
void embedding_backward(T *dwte, T *dwpe, const T *dout, const int32_t *tokens, int64_t B, int64_t Tn, int64_t C) {
  constexpr int64_t kBlock = 64;
  const int64_t n_blocks = (C + kBlock - 1) / kBlock;
  parallel_for(n_blocks, B * Tn * C >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; blk++) {
      const int64_t c0 = blk * kBlock, c1 = C < c0 + kBlock ? C : c0 + kBlock;
      for (int64_t n = 0; n < B * Tn; n++) {
        const T *d = dout + n * C;
        T *tok = dwte + (int64_t)tokens[n] * C;
        for (int64_t c = c0; c < c1; c++) tok[c] += d[c];
        if (dwpe) {
          T *pos = dwpe + (n % Tn) * C;
          for (int64_t c = c0; c < c1; c++) pos[c] += d[c];
        }
      }
    }
  });
}

}  // namespace moas
