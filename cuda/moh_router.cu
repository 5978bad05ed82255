// The router softmax backward kernel: a thin wrapper around moh_router.cuh's block function, and its launcher.
#include <string>

#include "check.cuh"
#include "moh_router.cuh"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kMohRouterThreads) router_softmax_backward_kernel(RouterSoftmaxBackwardArgs a) {
  router_softmax_backward_block(MohRouterDeviceBlock{}, a, blockIdx.x);
}

}  // namespace

int32_t router_softmax_backward(float *dlogits, int64_t dlogits_stride, const float *dp, const float *p, int64_t N,
                                int64_t width, void *stream) {
  if (N < 0 || width < 0 || (N > 0 && dlogits_stride < width))
    return fail("router_softmax_backward: N and width must be >= 0 and dlogits_stride >= width (N " +
                std::to_string(N) + ", width " + std::to_string(width) + ", stride " + std::to_string(dlogits_stride) +
                ")");
  if (N == 0 || width == 0) return kOk;
  if (!dlogits || !dp || !p) return fail("router_softmax_backward: a null argument");
  const RouterSoftmaxBackwardArgs a{dlogits, dlogits_stride, dp, p, N, width};
  return launch(router_softmax_backward_kernel, router_softmax_backward_grid(a), kMohRouterThreads, 0, a, stream,
                "router_softmax_backward");
}

}  // namespace cuda
}  // namespace moas
