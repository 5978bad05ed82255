// The MoAS mixing-backward kernel: a thin wrapper around moas_mix.cuh's block function, and its launcher.
#include <string>

#include "check.cuh"
#include "moas_mix.cuh"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kMoasMixThreads) moas_mix_backward_kernel(MoasMixArgs a) {
  moas_mix_backward_block(MoasMixDeviceBlock{}, a, blockIdx.x);
}

}  // namespace

int32_t moas_mix_backward(float *d_mix, float *dz, const float *z, const float *mix, const int64_t *row,
                          const int64_t *count, int64_t capacity, int64_t width, int64_t n_branches, int64_t branch,
                          void *stream) {
  if (capacity < 0 || width < 0 || n_branches < 1 || branch < 0 || branch >= n_branches)
    return fail("moas_mix_backward: capacity and width must be >= 0 and branch in [0, n_branches) (branch " +
                std::to_string(branch) + ", n_branches " + std::to_string(n_branches) + ")");
  if (capacity == 0) return kOk;
  if (!d_mix || !dz || !z || !mix || !row || !count) return fail("moas_mix_backward: a null argument");
  const MoasMixArgs a{d_mix, dz, z, mix, row, count, capacity, width, n_branches, branch};
  return launch(moas_mix_backward_kernel, moas_mix_grid(a), kMoasMixThreads, 0, a, stream, "moas_mix_backward");
}

}  // namespace cuda
}  // namespace moas
