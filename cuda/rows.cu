// The row kernels: select_rows runs rows.cuh's block function; gather and scatter-add give each (row, column)
// element to one thread. Rows of a RowSet are distinct tokens, so the scatter never needs atomics.
#include <string>

#include "check.cuh"
#include "rows.cuh"

namespace moas {
namespace cuda {
namespace {

constexpr int kCopyThreads = 256;

__global__ void __launch_bounds__(kSelectThreads) select_rows_kernel(SelectArgs a) {
  extern __shared__ __align__(16) unsigned char shared[];
  select_rows_block(SelectDeviceBlock{}, a, shared);
}

__global__ void gather_rows_kernel(float *out, int64_t out_stride, const float *src, int64_t src_stride,
                                   const int64_t *row, const int64_t *count, int64_t capacity, int64_t width) {
  const int64_t n = (*count < capacity ? *count : capacity) * width;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = e / width, c = e % width;
    out[r * out_stride + c] = src[row[r] * src_stride + c];
  }
}

__global__ void scatter_add_rows_kernel(float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                                        const int64_t *row, const float *scale, const int64_t *count, int64_t capacity,
                                        int64_t width) {
  const int64_t n = (*count < capacity ? *count : capacity) * width;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = e / width, c = e % width;
    dst[row[r] * dst_stride + c] += (scale ? scale[r] : 1.0f) * src[r * src_stride + c];
  }
}

unsigned copy_grid(int64_t capacity, int64_t width) {
  const int64_t blocks = (capacity * width + kCopyThreads - 1) / kCopyThreads;
  return (unsigned)(blocks < 65535 ? blocks : 65535);
}

}  // namespace

int32_t select_rows(int64_t *row, int32_t *pos, int64_t *begin, const uint8_t *flags, int64_t flag_stride,
                    int64_t batch, int64_t seq, int64_t past, void *stream) {
  if (batch < 0 || seq < 0 || past < 0 || flag_stride < 1)
    return fail("select_rows: batch, seq and past must be >= 0 and flag_stride >= 1");
  if (!begin || (batch * seq > 0 && (!row || !pos || !flags))) return fail("select_rows: a null argument");
  const SelectArgs a{row, pos, begin, flags, flag_stride, batch, seq, past};
  select_rows_kernel<<<1, kSelectThreads, select_shared_bytes(), (cudaStream_t)stream>>>(a);
  return launched("select_rows");
}

int32_t gather_rows(float *out, int64_t out_stride, const float *src, int64_t src_stride, const int64_t *row,
                    const int64_t *count, int64_t capacity, int64_t width, void *stream) {
  if (capacity < 0 || width < 0) return fail("gather_rows: capacity and width must be >= 0");
  if (capacity == 0 || width == 0) return kOk;
  if (!out || !src || !row || !count) return fail("gather_rows: a null argument");
  gather_rows_kernel<<<copy_grid(capacity, width), kCopyThreads, 0, (cudaStream_t)stream>>>(
      out, out_stride, src, src_stride, row, count, capacity, width);
  return launched("gather_rows");
}

int32_t scatter_add_rows(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, const int64_t *row,
                         const float *scale, const int64_t *count, int64_t capacity, int64_t width, void *stream) {
  if (capacity < 0 || width < 0) return fail("scatter_add_rows: capacity and width must be >= 0");
  if (capacity == 0 || width == 0) return kOk;
  if (!dst || !src || !row || !count) return fail("scatter_add_rows: a null argument");
  scatter_add_rows_kernel<<<copy_grid(capacity, width), kCopyThreads, 0, (cudaStream_t)stream>>>(
      dst, dst_stride, src, src_stride, row, scale, count, capacity, width);
  return launched("scatter_add_rows");
}

}  // namespace cuda
}  // namespace moas
