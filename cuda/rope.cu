// The RoPE kernel: a thin wrapper around rope.cuh's block function, and its launcher.
#include <string>

#include "check.cuh"
#include "rope.cuh"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kRopeThreads) rope_rotate_kernel(RopeArgs a) {
  rope_rotate_block(RopeDeviceBlock{}, a, blockIdx.x);
}

}  // namespace

int32_t rope_rotate(float *buf, int64_t stride, int64_t col0, int64_t n_heads, int64_t m, const int32_t *pos,
                    const float *cos, const float *sin, int64_t half, int32_t direction, void *stream) {
  if (m < 0 || n_heads < 0 || half < 0 || col0 < 0 || (direction != 1 && direction != -1))
    return fail("rope_rotate: m, n_heads, half and col0 must be >= 0 and direction +1 or -1");
  if (m * n_heads * half == 0) return kOk;
  if (!buf || !pos || !cos || !sin) return fail("rope_rotate: a null argument");
  const RopeArgs a{buf, stride, col0, n_heads, m, pos, cos, sin, half, (float)direction};
  return launch(rope_rotate_kernel, rope_grid(a), kRopeThreads, 0, a, stream, "rope_rotate");
}

}  // namespace cuda
}  // namespace moas
