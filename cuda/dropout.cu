// The dropout kernel: a thin wrapper around dropout.cuh's block function, and its launcher.
#include <string>

#include "check.cuh"
#include "cuda_host/cuda_backend.h"
#include "dropout.cuh"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kDropoutThreads) dropout_apply_kernel(DropoutArgs a) {
  dropout_apply_block(DropoutDeviceBlock{}, a, blockIdx.x);
}

}  // namespace

int32_t dropout_apply(float *x, int64_t m, int64_t width, const int64_t *row, const moas_cuda_dropout *dropout,
                      void *stream) {
  if (m < 0 || width < 0) return fail("dropout_apply: m and width must be >= 0");
  if (check_dropout("dropout_apply", dropout) != kOk) return kFailed;
  if (!dropout || dropout->p == 0.0f || m * width == 0) return kOk;
  if (!x) return fail("dropout_apply: a null argument");
  const DropoutArgs a{x, m, width, row, Dropout{dropout->p, dropout->key}};
  return launch(dropout_apply_kernel, dropout_grid(a), kDropoutThreads, 0, a, stream, "dropout_apply");
}

}  // namespace cuda
}  // namespace moas
