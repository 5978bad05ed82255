// MoH's gates on its heads' outputs on the GPU (SPEC §4: y_t = c_proj(concat_i gate_t,i head_i(t))): the forward
// scales each (token, head) pair's head_dim columns by its gate, one thread per element; the backward gives each pair
// one thread, which runs src/attention/moh_gates.hpp's moh_gate_head_backward — the CPU's own loop, so the gate's gradient is
// summed in the CPU's column order. Inactive pairs have gate 0 and zero outputs, so they need no branch.
#pragma once

#include <cstdint>

#include "attention/moh_gates.hpp"
#include "block.cuh"

namespace moas {
namespace cuda {

constexpr int kMohHeadThreads = 256;
using MohHeadDeviceBlock = DeviceBlock<kMohHeadThreads>;
using MohHeadHostBlock = HostBlock<kMohHeadThreads>;

struct MohGateHeadsArgs {
  float *gated;       // [N, heads * head_dim]
  const float *gate;  // [N, heads]
  const float *att;   // [N, heads * head_dim]
  int64_t N, heads, head_dim;
};

struct MohGateHeadsBackwardArgs {
  float *datt;          // [N, heads * head_dim], overwritten
  float *dgate;         // [N, heads], overwritten
  const float *dgated;  // [N, heads * head_dim]
  const float *gate;    // [N, heads]
  const float *att;     // [N, heads * head_dim]
  int64_t N, heads, head_dim;
};

inline Grid moh_gate_heads_grid(const MohGateHeadsArgs &a) {
  return {ceil_div(a.N * a.heads * a.head_dim, kMohHeadThreads), 1, 1};
}
inline Grid moh_gate_heads_backward_grid(const MohGateHeadsBackwardArgs &a) {
  return {ceil_div(a.N * a.heads, kMohHeadThreads), 1, 1};
}

template <class Block>
MOAS_HD void moh_gate_heads_block(const Block &block, const MohGateHeadsArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t e = x * Block::kThreads + t;
    if (e >= a.N * a.heads * a.head_dim) return;
    a.gated[e] = a.gate[e / a.head_dim] * a.att[e];  // moh_gate_head, one column per thread
  });
}

template <class Block>
MOAS_HD void moh_gate_heads_backward_block(const Block &block, const MohGateHeadsBackwardArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t pair = x * Block::kThreads + t;  // n * heads + h
    if (pair >= a.N * a.heads) return;
    const int64_t at = pair * a.head_dim;
    a.dgate[pair] = moh_gate_head_backward(a.datt + at, a.gate[pair], a.dgated + at, a.att + at, a.head_dim);
  });
}

// Launchers (moh_heads.cu); the table's moh_gate_heads and moh_gate_heads_backward.
int32_t moh_gate_heads(float *gated, const float *gate, const float *att, int64_t N, int64_t heads, int64_t head_dim,
                       void *stream);
int32_t moh_gate_heads_backward(float *datt, float *dgate, const float *dgated, const float *gate, const float *att,
                                int64_t N, int64_t heads, int64_t head_dim, void *stream);

}  // namespace cuda
}  // namespace moas
