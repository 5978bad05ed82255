// The elementwise kernels: thin wrappers around elementwise.cuh's block functions, and their launchers.
#include <string>

#include "check.cuh"
#include "elementwise.cuh"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kElementwiseThreads) add_kernel(AddArgs a) {
  add_block(ElementwiseDeviceBlock{}, a, blockIdx.x);
}

__global__ void __launch_bounds__(kElementwiseThreads) fill_rows_kernel(FillRowsArgs a) {
  fill_rows_block(ElementwiseDeviceBlock{}, a, blockIdx.x);
}

__global__ void __launch_bounds__(kElementwiseThreads) column_sum_kernel(ColumnSumArgs a) {
  column_sum_block(ElementwiseDeviceBlock{}, a, blockIdx.x);
}

__global__ void __launch_bounds__(kElementwiseThreads) scale_rows_kernel(ScaleRowsArgs a) {
  scale_rows_block(ElementwiseDeviceBlock{}, a, blockIdx.x);
}

int32_t check_rows(const char *what, int64_t stride, int64_t N, int64_t width) {
  if (N < 0 || width < 0) return fail(std::string(what) + ": N and width must be >= 0");
  if (N > 0 && stride < width)
    return fail(std::string(what) + ": stride " + std::to_string(stride) + " is below width " + std::to_string(width));
  return kOk;
}

}  // namespace

int32_t add(float *out, const float *a, const float *b, int64_t n, void *stream) {
  if (n < 0) return fail("add: n must be >= 0");
  if (n == 0) return kOk;
  if (!out || !a || !b) return fail("add: a null argument");
  const AddArgs args{out, a, b, n};
  return launch(add_kernel, add_grid(args), kElementwiseThreads, 0, args, stream, "add");
}

int32_t fill_rows(float *out, int64_t stride, const float *values, int64_t N, int64_t width, void *stream) {
  if (check_rows("fill_rows", stride, N, width) != kOk) return kFailed;
  if (N == 0 || width == 0) return kOk;
  if (!out || !values) return fail("fill_rows: a null argument");
  const FillRowsArgs a{out, stride, values, N, width};
  return launch(fill_rows_kernel, fill_rows_grid(a), kElementwiseThreads, 0, a, stream, "fill_rows");
}

// N = 0 still launches: sums[c] += 0 turns -0 into +0 on the CPU too.
int32_t column_sum_accumulate(float *sums, const float *x, int64_t stride, int64_t N, int64_t width, void *stream) {
  if (check_rows("column_sum_accumulate", stride, N, width) != kOk) return kFailed;
  if (width == 0) return kOk;
  if (!sums || (N > 0 && !x)) return fail("column_sum_accumulate: a null argument");
  const ColumnSumArgs a{sums, x, stride, N, width};
  return launch(column_sum_kernel, column_sum_grid(a), kElementwiseThreads, 0, a, stream, "column_sum_accumulate");
}

int32_t scale_rows(float *x, int64_t stride, float beta, int64_t N, int64_t width, void *stream) {
  if (check_rows("scale_rows", stride, N, width) != kOk) return kFailed;
  if (N == 0 || width == 0) return kOk;
  if (!x) return fail("scale_rows: a null argument");
  const ScaleRowsArgs a{x, stride, beta, N, width};
  return launch(scale_rows_kernel, scale_rows_grid(a), kElementwiseThreads, 0, a, stream, "scale_rows");
}

}  // namespace cuda
}  // namespace moas
