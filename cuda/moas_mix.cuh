// MoAS's mixing backward on the GPU (the CUDA twin of moas.cpp's per-row loop): for branch k's compact rows, the
// gradient of each token's mixing weight, dot(dz, z), and the branch's output gradient scaled by that weight. One
// thread per row runs moas_mix_row_backward, the CPU's own function, so the dot products add in the CPU's order and
// give its bits (a block-wide tree would reorder them). The forward mixing is the table's scatter_add_rows.
#pragma once

#include <cstdint>

#include "attention/moas_mix.hpp"
#include "block.cuh"

namespace moas {
namespace cuda {

constexpr int kMoasMixThreads = 128;
using MoasMixDeviceBlock = DeviceBlock<kMoasMixThreads>;
using MoasMixHostBlock = HostBlock<kMoasMixThreads>;

struct MoasMixArgs {
  float *d_mix;          // [N, n_branches]: column `branch` written at the listed tokens
  float *dz;             // [capacity, width], scaled in place
  const float *z;        // [capacity, width]
  const float *mix;      // [N, n_branches]
  const int64_t *row;    // [capacity] token of each compact row
  const int64_t *count;  // device value: the rows in use (<= capacity)
  int64_t capacity, width, n_branches, branch;
};

inline Grid moas_mix_grid(const MoasMixArgs &a) { return {ceil_div(a.capacity, kMoasMixThreads), 1, 1}; }

template <class Block>
MOAS_HD void moas_mix_backward_block(const Block &block, const MoasMixArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t r = x * Block::kThreads + t;
    if (r >= min_i64(*a.count, a.capacity)) return;
    const int64_t slot = a.row[r] * a.n_branches + a.branch;
    a.d_mix[slot] = moas_mix_row_backward(a.dz + r * a.width, a.z + r * a.width, a.mix[slot], a.width);
  });
}

// Launcher (moas_mix.cu); the table's moas_mix_backward.
int32_t moas_mix_backward(float *d_mix, float *dz, const float *z, const float *mix, const int64_t *row,
                          const int64_t *count, int64_t capacity, int64_t width, int64_t n_branches, int64_t branch,
                          void *stream);

}  // namespace cuda
}  // namespace moas
