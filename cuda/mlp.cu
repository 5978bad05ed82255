// The GELU and SwiGLU kernels: thin wrappers around mlp.cuh's block functions, and their launchers.
#include <string>

#include "check.cuh"
#include "mlp.cuh"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kMlpThreads) gelu_forward_kernel(MlpArgs a) {
  gelu_forward_block(MlpDeviceBlock{}, a, blockIdx.x);
}

__global__ void __launch_bounds__(kMlpThreads) gelu_backward_kernel(MlpArgs a) {
  gelu_backward_block(MlpDeviceBlock{}, a, blockIdx.x);
}

__global__ void __launch_bounds__(kMlpThreads) swiglu_forward_kernel(MlpArgs a) {
  swiglu_forward_block(MlpDeviceBlock{}, a, blockIdx.x);
}

__global__ void __launch_bounds__(kMlpThreads) swiglu_backward_kernel(MlpArgs a) {
  swiglu_backward_block(MlpDeviceBlock{}, a, blockIdx.x);
}

template <typename Kernel>
int32_t run(Kernel kernel, float *out, const float *dout, bool backward, const float *inp, int64_t n, int64_t h,
            void *stream, const char *what) {
  if (n < 0 || h < 1) return fail(std::string(what) + ": sizes must be >= 0 (h >= 1)");
  if (n == 0) return kOk;
  if (!out || !inp || (backward && !dout)) return fail(std::string(what) + ": a null argument");
  const MlpArgs a{out, dout, inp, n, h};
  return launch(kernel, mlp_grid(a), kMlpThreads, 0, a, stream, what);
}

}  // namespace

int32_t gelu_forward(float *out, const float *inp, int64_t n, void *stream) {
  return run(gelu_forward_kernel, out, nullptr, false, inp, n, 1, stream, "gelu_forward");
}

int32_t gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n, void *stream) {
  return run(gelu_backward_kernel, dinp, dout, true, inp, n, 1, stream, "gelu_backward");
}

int32_t swiglu_forward(float *out, const float *pre, int64_t N, int64_t h, void *stream) {
  if (N < 0) return fail("swiglu_forward: N must be >= 0");
  return run(swiglu_forward_kernel, out, nullptr, false, pre, N * h, h, stream, "swiglu_forward");
}

int32_t swiglu_backward(float *dpre, const float *dout, const float *pre, int64_t N, int64_t h, void *stream) {
  if (N < 0) return fail("swiglu_backward: N must be >= 0");
  return run(swiglu_backward_kernel, dpre, dout, true, pre, N * h, h, stream, "swiglu_backward");
}

}  // namespace cuda
}  // namespace moas
