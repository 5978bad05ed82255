// The gradient-norm and AdamW kernels: thin wrappers around adamw.cuh's block functions, and their launchers.
#include <string>

#include "adamw.cuh"
#include "check.cuh"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kAdamWThreads) grad_norm_chunk_kernel(GradNormArgs a) {
  extern __shared__ __align__(16) unsigned char shared[];
  grad_norm_chunk_block(AdamWDeviceBlock{}, a, shared, blockIdx.x);
}

__global__ void __launch_bounds__(kAdamWThreads) grad_norm_total_kernel(GradNormArgs a) {
  extern __shared__ __align__(16) unsigned char shared[];
  grad_norm_total_block(AdamWDeviceBlock{}, a, shared);
}

__global__ void __launch_bounds__(kAdamWThreads) adamw_step_kernel(AdamWArgs a) {
  adamw_step_block(AdamWDeviceBlock{}, a, blockIdx.x);
}

}  // namespace

int32_t gradient_norm(double *norm, double *scratch, const float *grads, int64_t n, void *stream) {
  if (n < 0) return fail("gradient_norm: n must be >= 0");
  if (!norm || (n > 0 && (!scratch || !grads))) return fail("gradient_norm: a null argument");
  const GradNormArgs a{norm, scratch, grads, n};
  if (launch(grad_norm_chunk_kernel, grad_norm_chunk_grid(a), kAdamWThreads, grad_norm_shared_bytes(), a, stream,
             "gradient_norm (chunks)") != kOk)
    return kFailed;
  return launch(grad_norm_total_kernel, Grid{1, 1, 1}, kAdamWThreads, grad_norm_shared_bytes(), a, stream,
                "gradient_norm (total)");
}

int32_t adamw_step(const moas_cuda_adamw_settings *settings, uint64_t step, double grad_norm, float *params,
                   const float *grads, float *exp_avg, float *exp_avg_sq, int64_t n, const int64_t *segment_begin,
                   const uint8_t *segment_decay, int64_t n_segments, void *stream) {
  if (!settings) return fail("adamw_step: a null argument");
  if (n < 0 || step < 1 || (n > 0 && n_segments < 1))
    return fail("adamw_step: n must be >= 0, step >= 1 and n_segments >= 1 when n > 0");
  if (n == 0) return kOk;
  if (!params || !grads || !exp_avg || !exp_avg_sq || !segment_begin || !segment_decay)
    return fail("adamw_step: a null argument");
  const AdamWSettings s{settings->lr,  settings->beta1,        settings->beta2,
                        settings->eps, settings->weight_decay, settings->grad_clip};
  const AdamWArgs a{adamw_factors<float>(s, step, grad_norm),
                    params,
                    exp_avg,
                    exp_avg_sq,
                    grads,
                    n,
                    segment_begin,
                    segment_decay,
                    n_segments};
  return launch(adamw_step_kernel, adamw_grid(a), kAdamWThreads, 0, a, stream, "adamw_step");
}

}  // namespace cuda
}  // namespace moas
