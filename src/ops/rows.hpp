// Which query rows an attention head computes. Dense attention uses every row; MoAS top-1 gives each branch the
// tokens routed to it and MoH each routed head the tokens that selected it. Rows are kept compact (row r of a
// head's q, output and gradients is the r-th selected token) and sorted by (batch, position), so one attention
// kernel serves all three with the causal mask taken from each row's original position.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "base/parallel.hpp"

namespace moas {

struct RowSet {
  std::vector<int64_t> row;    // [m] global token index b * seq + t, ascending
  std::vector<int32_t> pos;    // [m] the position within its sequence
  std::vector<int64_t> begin;  // [batch + 1]: the rows of sequence b are [begin[b], begin[b + 1])
  bool all = false;            // every token, in order (row[r] == r): callers may skip gathers

  int64_t size() const { return (int64_t)row.size(); }

  // `past` offsets the positions: token t of a sequence sits at position past + t (decoding after a cache).
  void set_all(int64_t batch, int64_t seq, int64_t past = 0) {
    select(batch, seq, [](int64_t) { return true; }, past);
    all = true;
  }
  // The tokens n for which keep(n) holds.
  template <class Keep>
  void select(int64_t batch, int64_t seq, Keep &&keep, int64_t past = 0) {
    // Room for every token: routing changes between calls of one shape without reallocating.
    row.reserve((size_t)(batch * seq));
    pos.reserve((size_t)(batch * seq));
    row.clear();
    pos.clear();
    begin.assign((size_t)batch + 1, 0);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t t = 0; t < seq; ++t)
        if (keep(b * seq + t)) {
          row.push_back(b * seq + t);
          pos.push_back((int32_t)(past + t));
        }
      begin[(size_t)b + 1] = (int64_t)row.size();
    }
    all = (int64_t)row.size() == batch * seq;
  }
};

// v holds n elements, with room for `capacity`: buffers sized by routing (a head's or a group's rows) keep the room of
// every token, so a new routing for a shape already seen never reallocates them.
template <typename T>
void resize_with_room(std::vector<T> &v, int64_t n, int64_t capacity) {
  v.reserve((size_t)capacity);
  v.resize((size_t)n);
}

// out[r, :] = src[row[r], :] for the width columns starting at each row.                 out [m, out_stride]
template <typename T>
void gather_rows(T *out, int64_t out_stride, const T *src, int64_t src_stride, const std::vector<int64_t> &row,
                 int64_t width) {
  const int64_t m = (int64_t)row.size();
  parallel_for(m, m * width >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; r++)
      std::memcpy(out + r * out_stride, src + row[(size_t)r] * src_stride, (size_t)width * sizeof(T));
  });
}

// dst[row[r], :] += scale[r] * src[r, :] (scale may be null for 1). Rows are distinct, so threads never write the
// same element.
template <typename T>
void scatter_add_rows(T *dst, int64_t dst_stride, const T *src, int64_t src_stride, const std::vector<int64_t> &row,
                      int64_t width, const T *scale) {
  const int64_t m = (int64_t)row.size();
  parallel_for(m, m * width >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; r++) {
      T *d = dst + row[(size_t)r] * dst_stride;
      const T *s = src + r * src_stride;
      const T a = scale ? scale[r] : T(1);
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) d[c] += a * s[c];
    }
  });
}

}  // namespace moas
