// The MoH head-gate kernels: thin wrappers around moh_heads.cuh's block functions, and their launchers.
#include <string>

#include "check.cuh"
#include "moh_heads.cuh"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kMohHeadThreads) moh_gate_heads_kernel(MohGateHeadsArgs a) {
  moh_gate_heads_block(MohHeadDeviceBlock{}, a, blockIdx.x);
}

__global__ void __launch_bounds__(kMohHeadThreads) moh_gate_heads_backward_kernel(MohGateHeadsBackwardArgs a) {
  moh_gate_heads_backward_block(MohHeadDeviceBlock{}, a, blockIdx.x);
}

int32_t check_shape(const char *what, int64_t N, int64_t heads, int64_t head_dim) {
  if (N < 0 || heads < 0 || head_dim < 0) return fail(std::string(what) + ": N, heads and head_dim must be >= 0");
  return kOk;
}

}  // namespace

int32_t moh_gate_heads(float *gated, const float *gate, const float *att, int64_t N, int64_t heads, int64_t head_dim,
                       void *stream) {
  if (check_shape("moh_gate_heads", N, heads, head_dim) != kOk) return kFailed;
  if (N * heads * head_dim == 0) return kOk;
  if (!gated || !gate || !att) return fail("moh_gate_heads: a null argument");
  const MohGateHeadsArgs a{gated, gate, att, N, heads, head_dim};
  return launch(moh_gate_heads_kernel, moh_gate_heads_grid(a), kMohHeadThreads, 0, a, stream, "moh_gate_heads");
}

int32_t moh_gate_heads_backward(float *datt, float *dgate, const float *dgated, const float *gate, const float *att,
                                int64_t N, int64_t heads, int64_t head_dim, void *stream) {
  if (check_shape("moh_gate_heads_backward", N, heads, head_dim) != kOk) return kFailed;
  if (N * heads == 0) return kOk;
  if (!dgate || !gate || (head_dim > 0 && (!datt || !dgated || !att)))
    return fail("moh_gate_heads_backward: a null argument");
  const MohGateHeadsBackwardArgs a{datt, dgate, dgated, gate, att, N, heads, head_dim};
  return launch(moh_gate_heads_backward_kernel, moh_gate_heads_backward_grid(a), kMohHeadThreads, 0, a, stream,
                "moh_gate_heads_backward");
}

}  // namespace cuda
}  // namespace moas
