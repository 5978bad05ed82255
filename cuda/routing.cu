// The router kernel: one thread per token runs router_token (routing.cuh), so softmax, argmax and top-K are the
// CPU's functions compiled for the device.
#include <string>

#include "check.cuh"
#include "routing.cuh"

namespace moas {
namespace cuda {
namespace {

constexpr int kRouterThreads = 128;

__global__ void router_softmax_kernel(float *probs, int64_t probs_stride, const float *logits, int64_t logits_stride,
                                      int64_t N, int64_t width, int32_t *choice, uint8_t *selected, int64_t k) {
  for (int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; n < N; n += (int64_t)gridDim.x * blockDim.x)
    router_token(probs + n * probs_stride, logits + n * logits_stride, width, choice ? choice + n : nullptr,
                 selected ? selected + n * width : nullptr, k);
}

}  // namespace

int32_t router_softmax(float *probs, int64_t probs_stride, const float *logits, int64_t logits_stride, int64_t N,
                       int64_t width, int32_t *choice, uint8_t *selected, int64_t k, void *stream) {
  if (N < 0 || width <= 0 || (selected && (k < 1 || k > width)))
    return fail("router_softmax: N must be >= 0, width > 0 and k in [1, width] when selecting (N " + std::to_string(N) +
                ", width " + std::to_string(width) + ", k " + std::to_string(k) + ")");
  if (N == 0) return kOk;
  if (!probs || !logits) return fail("router_softmax: a null argument");
  const int64_t blocks = (N + kRouterThreads - 1) / kRouterThreads;
  router_softmax_kernel<<<(unsigned)(blocks < 65535 ? blocks : 65535), kRouterThreads, 0, (cudaStream_t)stream>>>(
      probs, probs_stride, logits, logits_stride, N, width, choice, selected, k);
  return launched("router_softmax");
}

}  // namespace cuda
}  // namespace moas
