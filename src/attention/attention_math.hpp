// The per-row arithmetic of tiled causal attention, shared by the CPU kernel (attention.cpp) and the CUDA kernels:
// which keys of a tile a query row sees, the GQA head map, and the online-softmax update of one row over one tile.
#pragma once

#include <cmath>
#include <cstdint>

#include "base/fast_math.hpp"
#include "base/hd.hpp"

namespace moas {

// Query head h of H reads kv head h / group, group = H / Hkv (MHA: group 1, MQA: group H). Never a modulo: that is
// only right when the counts are equal.
MOAS_HD inline int64_t kv_head_of(int64_t head, int64_t group) { return head / group; }

// The first key the query at sequence position `pos` sees: pos - window with a sliding window (SPEC §7: keys
// pos - w .. pos), else 0.
MOAS_HD inline int64_t first_visible_key(int64_t pos, int64_t window) {
  return window > 0 && pos > window ? pos - window : 0;
}

// The most keys one query row sees among positions 0 .. seq - 1: w + 1 with a window, else all of them.
MOAS_HD inline int64_t max_visible_keys(int64_t seq, int64_t window) {
  return window > 0 && window < seq ? window + 1 : seq;
}

// The first key of the key tile holding `key`. Tiles are aligned to the rows of the key buffer, whose row 0 holds key
// `first_key` (KeyValues::first_key: 0 for a training batch, the oldest key a windowed cache keeps), so a tile never
// starts before the buffer; key >= first_key.
MOAS_HD inline int64_t key_tile_start(int64_t key, int64_t first_key, int64_t tile) {
  return first_key + (key - first_key) / tile * tile;
}

// The end of the query chunk that starts at compact row r0 (rows r0 .. end - 1 of one sequence, positions
// ascending, distinct): the rows in one tile-aligned band of positions, so at most `tile`. Dense rows give the
// usual chunks of `tile`; routed (sparse) rows give chunks whose causal span stays within their band, so they do the
// triangle's work of their key tiles, not the square's.
MOAS_HD inline int64_t query_chunk_end(const int32_t *pos, int64_t r0, int64_t end, int64_t tile) {
  const int64_t band = pos[r0] / tile;
  int64_t r1 = r0 + 1;
  while (r1 < end && pos[r1] / tile == band) ++r1;
  return r1;
}

// The keys j0 .. j0 + tile_len - 1 of a tile that the query at sequence position `pos` may attend to
// (first_visible_key <= j <= pos), as the column range [*lo, *hi) of the tile; empty (hi <= lo) when the whole tile
// lies in the future or before the window.
MOAS_HD inline void visible_keys(int64_t pos, int64_t window, int64_t j0, int64_t tile_len, int64_t *lo,
                                 int64_t *hi) {
  const int64_t first = first_visible_key(pos, window) - j0, last = pos - j0 + 1;
  *lo = first < 0 ? 0 : (first > tile_len ? tile_len : first);
  *hi = last < 0 ? 0 : (last > tile_len ? tile_len : last);
}

// Online softmax, one row, one tile. s[0, n) holds the row's scaled scores against the tile's keys, of which columns
// [lo, hi) are visible. On return s[c] = exp(s[c] - m) with the updated running max m on visible columns and 0
// elsewhere, l (the running normaliser) is rescaled and extended, and the factor by which the caller must rescale
// the row's output accumulator is returned. A tile with nothing visible leaves m and l alone and returns 1, so a
// row that has seen no key yet never evaluates exp(-inf - -inf).
template <typename T>
MOAS_HD inline T online_softmax_update(T *s, int64_t lo, int64_t hi, int64_t n, T &m, T &l) {
  if (hi <= lo) {
    for (int64_t c = 0; c < n; ++c) s[c] = T(0);
    return T(1);
  }
  // A max reduction with several lanes: the scalar chain of dependent max operations was a quarter of the forward.
  T mx = m;
#pragma omp simd reduction(max : mx)
  for (int64_t c = lo; c < hi; ++c) mx = s[c] > mx ? s[c] : mx;
  const T alpha = fast_exp(m - mx);  // 0 on the first visible tile (m = -inf)
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < n; ++c) {
    const T p = (c >= lo && c < hi) ? fast_exp(s[c] - mx) : T(0);
    s[c] = p;
    sum += p;
  }
  l = l * alpha + sum;
  m = mx;
  return alpha;
}

// -INFINITY rather than std::numeric_limits (a constexpr host function nvcc will not call from device code).
template <typename T>
MOAS_HD inline T negative_infinity() {
  return -T(INFINITY);
}

}  // namespace moas
