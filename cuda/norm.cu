// The norm kernels: thin wrappers around norm.cuh's block functions, and their launchers.
#include <string>

#include "check.cuh"
#include "norm.cuh"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kNormThreads) norm_forward_kernel(NormArgs a) {
  extern __shared__ __align__(16) unsigned char shared[];
  norm_forward_block(NormDeviceBlock{}, a, shared, blockIdx.x);
}

__global__ void __launch_bounds__(kNormThreads) norm_backward_row_kernel(NormArgs a) {
  extern __shared__ __align__(16) unsigned char shared[];
  norm_backward_row_block(NormDeviceBlock{}, a, shared, blockIdx.x);
}

__global__ void __launch_bounds__(kNormThreads) norm_backward_band_kernel(NormArgs a) {
  norm_backward_band_block(NormDeviceBlock{}, a, blockIdx.x, blockIdx.y);
}

__global__ void __launch_bounds__(kNormThreads) norm_backward_column_kernel(NormArgs a) {
  norm_backward_column_block(NormDeviceBlock{}, a, blockIdx.x);
}

int32_t check_dims(const char *what, int64_t N, int64_t C) {
  if (N < 0 || C < 1) return fail(std::string(what) + ": N must be >= 0 and C >= 1");
  if (ceil_div(N, kNormRowBand) > 65535)
    return fail(std::string(what) + ": at most " + std::to_string(65535 * kNormRowBand) + " rows per launch");
  return kOk;
}

}  // namespace

int32_t norm_forward(int32_t rms, float *out, float *mean, float *rstd, const float *inp, const float *weight,
                     const float *bias, int64_t N, int64_t C, void *stream) {
  if (check_dims("norm_forward", N, C) != kOk) return kFailed;
  if (N == 0) return kOk;
  if (!out || !mean || !rstd || !inp || !weight) return fail("norm_forward: a null argument");
  NormArgs a{};
  a.rms = rms != 0;
  a.out = out;
  a.mean_out = mean;
  a.rstd_out = rstd;
  a.inp = inp;
  a.weight = weight;
  a.bias = bias;
  a.N = N;
  a.C = C;
  return launch(norm_forward_kernel, norm_row_grid(a), kNormThreads, norm_shared_bytes(), a, stream, "norm_forward");
}

int32_t norm_backward(int32_t rms, float *dinp, float *dweight, float *dbias, float *scratch, const float *dout,
                      const float *inp, const float *weight, const float *mean, const float *rstd, int64_t N, int64_t C,
                      void *stream) {
  if (check_dims("norm_backward", N, C) != kOk) return kFailed;
  if (N == 0) return kOk;
  if (!dinp || !dweight || !scratch || !dout || !inp || !weight || !mean || !rstd)
    return fail("norm_backward: a null argument");
  NormArgs a{};
  a.rms = rms != 0;
  a.dinp = dinp;
  a.dweight = dweight;
  a.dbias = dbias;
  a.scratch = scratch;
  a.dout = dout;
  a.inp = inp;
  a.weight = weight;
  a.mean = mean;
  a.rstd = rstd;
  a.N = N;
  a.C = C;
  if (launch(norm_backward_row_kernel, norm_row_grid(a), kNormThreads, norm_shared_bytes(), a, stream,
             "norm_backward (dx)") != kOk ||
      launch(norm_backward_band_kernel, norm_band_grid(a), kNormThreads, 0, a, stream, "norm_backward (bands)") != kOk)
    return kFailed;
  return launch(norm_backward_column_kernel, norm_column_grid(a), kNormThreads, 0, a, stream,
                "norm_backward (columns)");
}

}  // namespace cuda
}  // namespace moas
