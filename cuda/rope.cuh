// Rotary position embedding on the GPU (the CUDA twin of src/ops/rope.hpp): one thread per rotated pair (row, head, i),
// each running the CPU's rope_rotate_pair with the table moas::RopeTable builds (uploaded by the caller).
#pragma once

#include <cstdint>

#include "block.cuh"
#include "ops/rope.hpp"

namespace moas {
namespace cuda {

constexpr int kRopeThreads = 256;
using RopeDeviceBlock = DeviceBlock<kRopeThreads>;
using RopeHostBlock = HostBlock<kRopeThreads>;

struct RopeArgs {
  float *buf;
  int64_t stride, col0, n_heads, m;
  const int32_t *pos;      // [m]
  const float *cos, *sin;  // [positions, half]
  int64_t half;
  float direction;  // +1 forward, -1 backward
};

inline Grid rope_grid(const RopeArgs &a) { return {ceil_div(a.m * a.n_heads * a.half, kRopeThreads), 1, 1}; }

template <class Block>
MOAS_HD void rope_rotate_block(const Block &block, const RopeArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t e = x * Block::kThreads + t;
    if (e >= a.m * a.n_heads * a.half) return;
    const int64_t i = e % a.half, h = e / a.half % a.n_heads, r = e / a.half / a.n_heads;
    const int64_t at = (int64_t)a.pos[r] * a.half + i;
    rope_rotate_pair(a.buf + r * a.stride + a.col0 + h * 2 * a.half + 2 * i, a.cos[at], a.direction * a.sin[at]);
  });
}

// Launcher (rope.cu); the table's rope_rotate.
int32_t rope_rotate(float *buf, int64_t stride, int64_t col0, int64_t n_heads, int64_t m, const int32_t *pos,
                    const float *cos, const float *sin, int64_t half, int32_t direction, void *stream);

}  // namespace cuda
}  // namespace moas
