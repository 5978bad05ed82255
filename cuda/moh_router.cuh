// The backward of MoH's router softmaxes on the GPU (src/ops/softmax.hpp's softmax_rows_backward): one thread per token,
// adding p_j dp_j in column order as the CPU does, so the logits' gradient has the CPU's bits. The three routers
// (wg, wg_0, wg_1) share one logits product; each softmax writes its own columns of it (dlogits_stride).
#pragma once

#include <cstdint>

#include "block.cuh"

namespace moas {
namespace cuda {

constexpr int kMohRouterThreads = 128;
using MohRouterDeviceBlock = DeviceBlock<kMohRouterThreads>;
using MohRouterHostBlock = HostBlock<kMohRouterThreads>;

struct RouterSoftmaxBackwardArgs {
  float *dlogits;  // [N, dlogits_stride]: columns [0, width) overwritten
  int64_t dlogits_stride;
  const float *dp, *p;  // [N, width]
  int64_t N, width;
};

inline Grid router_softmax_backward_grid(const RouterSoftmaxBackwardArgs &a) {
  return {ceil_div(a.N, kMohRouterThreads), 1, 1};
}

template <class Block>
MOAS_HD void router_softmax_backward_block(const Block &block, const RouterSoftmaxBackwardArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t n = x * Block::kThreads + t;
    if (n >= a.N) return;
    const float *pn = a.p + n * a.width, *gn = a.dp + n * a.width;
    float inner = 0.0f;
    for (int64_t i = 0; i < a.width; ++i) inner += pn[i] * gn[i];
    float *d = a.dlogits + n * a.dlogits_stride;
    for (int64_t i = 0; i < a.width; ++i) d[i] = pn[i] * (gn[i] - inner);
  });
}

// Launcher (moh_router.cu); the table's router_softmax_backward.
int32_t router_softmax_backward(float *dlogits, int64_t dlogits_stride, const float *dp, const float *p, int64_t N,
                                int64_t width, void *stream);

}  // namespace cuda
}  // namespace moas
