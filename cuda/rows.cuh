// Routed rows on the GPU (the CUDA twin of src/ops/rows.hpp): a RowSet built from per-token routing flags (MoAS top-1's
// one-hot choice, MoH's top-K indicator), and the gather / scatter-add between token rows and a head's compact rows.
// select_rows_block is one block for the whole batch: it scans the flags chunk by chunk with a Hillis-Steele prefix
// sum, so row order (batch, then position) and the counts come out as on the CPU, without atomics.
#pragma once

#include <cstdint>

#include "block.cuh"

namespace moas {
namespace cuda {

constexpr int kSelectThreads = 256;
using SelectDeviceBlock = DeviceBlock<kSelectThreads>;
using SelectHostBlock = HostBlock<kSelectThreads>;

struct SelectArgs {
  int64_t *row;    // [<= batch * seq]
  int32_t *pos;    // [<= batch * seq]
  int64_t *begin;  // [batch + 1]
  const uint8_t *flags;
  int64_t flag_stride, batch, seq, past;
};

struct SelectShared {
  int64_t *scan[2];  // [T] each: flags, then their inclusive prefix sums, ping-ponged
  int64_t *count;    // [1] rows selected so far
};
MOAS_HD inline SelectShared select_shared(SharedArena &arena, int threads) {
  SelectShared sh;
  sh.scan[0] = arena.take<int64_t>(threads);
  sh.scan[1] = arena.take<int64_t>(threads);
  sh.count = arena.take<int64_t>(1);
  return sh;
}

template <class Block>
MOAS_HD void select_rows_block(const Block &block, const SelectArgs &a, unsigned char *shared) {
  constexpr int T = Block::kThreads;
  SharedArena arena{shared};
  const SelectShared sh = select_shared(arena, T);
  block.each([&](int t) {
    if (t > 0) return;
    *sh.count = 0;
    a.begin[0] = 0;
  });
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t t0 = 0; t0 < a.seq; t0 += T) {
      block.each(
          [&](int t) { sh.scan[0][t] = t0 + t < a.seq && a.flags[(b * a.seq + t0 + t) * a.flag_stride] != 0 ? 1 : 0; });
      int in = 0;  // which scan buffer holds the current sums
      for (int offset = 1; offset < T; offset *= 2, in ^= 1)
        block.each([&](int t) { sh.scan[in ^ 1][t] = sh.scan[in][t] + (t >= offset ? sh.scan[in][t - offset] : 0); });
      block.each([&](int t) {
        const int64_t before = t > 0 ? sh.scan[in][t - 1] : 0;
        if (sh.scan[in][t] == before) return;  // not selected
        const int64_t r = *sh.count + before;
        a.row[r] = b * a.seq + t0 + t;
        a.pos[r] = (int32_t)(a.past + t0 + t);
      });
      block.each([&](int t) {
        if (t == 0) *sh.count += sh.scan[in][T - 1];
      });
    }
    block.each([&](int t) {
      if (t == 0) a.begin[b + 1] = *sh.count;
    });
  }
}

inline size_t select_shared_bytes() {
  SharedArena arena{nullptr};
  select_shared(arena, kSelectThreads);
  return arena.used;
}

// Launchers (rows.cu); the table's select_rows, gather_rows and scatter_add_rows.
int32_t select_rows(int64_t *row, int32_t *pos, int64_t *begin, const uint8_t *flags, int64_t flag_stride,
                    int64_t batch, int64_t seq, int64_t past, void *stream);
int32_t gather_rows(float *out, int64_t out_stride, const float *src, int64_t src_stride, const int64_t *row,
                    const int64_t *count, int64_t capacity, int64_t width, void *stream);
int32_t scatter_add_rows(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, const int64_t *row,
                         const float *scale, const int64_t *count, int64_t capacity, int64_t width, void *stream);

}  // namespace cuda
}  // namespace moas
