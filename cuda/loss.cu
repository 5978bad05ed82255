// The cross-entropy kernels: thin wrappers around loss.cuh's block functions, and their launchers.
#include <string>

#include "check.cuh"
#include "loss.cuh"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kLossThreads) cross_entropy_lse_kernel(LossArgs a) {
  extern __shared__ __align__(16) unsigned char shared[];
  cross_entropy_lse_block(LossDeviceBlock{}, a, shared, blockIdx.x);
}

__global__ void __launch_bounds__(kLossThreads) cross_entropy_mean_kernel(LossArgs a) {
  extern __shared__ __align__(16) unsigned char shared[];
  cross_entropy_mean_block(LossDeviceBlock{}, a, shared);
}

__global__ void __launch_bounds__(kLossThreads) cross_entropy_backward_kernel(LossArgs a) {
  cross_entropy_backward_block(LossDeviceBlock{}, a, blockIdx.x);
}

}  // namespace

int32_t cross_entropy_forward(float *lse, double *loss, int64_t *n_counted, const float *logits, const int32_t *targets,
                              int64_t N, int64_t V, void *stream) {
  if (N < 0 || V < 1) return fail("cross_entropy_forward: N must be >= 0 and V >= 1");
  if (!lse || !logits || (targets && (!loss || !n_counted))) return fail("cross_entropy_forward: a null argument");
  LossArgs a{};
  a.lse_out = lse;
  a.lse = lse;
  a.loss = loss;
  a.counted = n_counted;
  a.logits = logits;
  a.targets = targets;
  a.N = N;
  a.V = V;
  if (launch(cross_entropy_lse_kernel, loss_row_grid(a), kLossThreads, loss_row_shared_bytes(), a, stream,
             "cross_entropy_forward (lse)") != kOk)
    return kFailed;
  if (!targets) return kOk;
  return launch(cross_entropy_mean_kernel, Grid{1, 1, 1}, kLossThreads, loss_mean_shared_bytes(), a, stream,
                "cross_entropy_forward (mean)");
}

int32_t cross_entropy_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets, int64_t N,
                               int64_t V, float scale, void *stream) {
  if (N < 0 || V < 1) return fail("cross_entropy_backward: N must be >= 0 and V >= 1");
  if (N == 0) return kOk;
  if (!dlogits || !logits || !lse || !targets) return fail("cross_entropy_backward: a null argument");
  LossArgs a{};
  a.lse = lse;
  a.dlogits = dlogits;
  a.logits = logits;
  a.targets = targets;
  a.N = N;
  a.V = V;
  a.scale = scale;
  return launch(cross_entropy_backward_kernel, loss_row_grid(a), kLossThreads, 0, a, stream, "cross_entropy_backward");
}

}  // namespace cuda
}  // namespace moas
