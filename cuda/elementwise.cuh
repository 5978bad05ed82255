// The model's elementwise steps on the GPU: add (the residual stream), fill_rows (a linear layer's bias, before its
// product accumulates onto it), column_sum_accumulate (a bias gradient) and scale_rows (gemm.cu's product with K = 0:
// C = beta C, as src/base/gemm.cpp's handled_empty writes it). One thread per element, except the column sums: one thread
// per column adds its rows in order from 0, the order of src/base/parallel.hpp's column_sum_accumulate, so its bits are the
// CPU's (splitting the rows among threads, as norm.cuh's bands do, would reorder the additions).
#pragma once

#include <cstdint>

#include "block.cuh"

namespace moas {
namespace cuda {

constexpr int kElementwiseThreads = 256;
using ElementwiseDeviceBlock = DeviceBlock<kElementwiseThreads>;
using ElementwiseHostBlock = HostBlock<kElementwiseThreads>;

struct AddArgs {
  float *out;          // [n], may be a or b
  const float *a, *b;  // [n]
  int64_t n;
};

struct FillRowsArgs {
  float *out;  // [N, stride]: columns [0, width) written
  int64_t stride;
  const float *values;  // [width]
  int64_t N, width;
};

struct ColumnSumArgs {
  float *sums;     // [width], accumulated
  const float *x;  // [N, stride]
  int64_t stride, N, width;
};

struct ScaleRowsArgs {
  float *x;  // [N, stride]: columns [0, width) scaled in place
  int64_t stride;
  float beta;
  int64_t N, width;
};

inline Grid add_grid(const AddArgs &a) { return {ceil_div(a.n, kElementwiseThreads), 1, 1}; }
// Rows flattened into one grid dimension: CUDA's y and z stop at 65535, fewer than a batch's rows.
inline Grid fill_rows_grid(const FillRowsArgs &a) { return {ceil_div(a.N * a.width, kElementwiseThreads), 1, 1}; }
inline Grid column_sum_grid(const ColumnSumArgs &a) { return {ceil_div(a.width, kElementwiseThreads), 1, 1}; }
inline Grid scale_rows_grid(const ScaleRowsArgs &a) { return {ceil_div(a.N * a.width, kElementwiseThreads), 1, 1}; }

template <class Block>
MOAS_HD void add_block(const Block &block, const AddArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t i = x * Block::kThreads + t;
    if (i < a.n) a.out[i] = a.a[i] + a.b[i];
  });
}

template <class Block>
MOAS_HD void fill_rows_block(const Block &block, const FillRowsArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t e = x * Block::kThreads + t;
    if (e >= a.N * a.width) return;
    const int64_t r = e / a.width, c = e % a.width;
    a.out[r * a.stride + c] = a.values[c];
  });
}

template <class Block>
MOAS_HD void column_sum_block(const Block &block, const ColumnSumArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t c = x * Block::kThreads + t;
    if (c >= a.width) return;
    float acc = 0.0f;
    for (int64_t r = 0; r < a.N; ++r) acc += a.x[r * a.stride + c];
    a.sums[c] += acc;
  });
}

template <class Block>
MOAS_HD void scale_rows_block(const Block &block, const ScaleRowsArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t e = x * Block::kThreads + t;
    if (e >= a.N * a.width) return;
    float &v = a.x[(e / a.width) * a.stride + e % a.width];
    v = a.beta == 0.0f ? 0.0f : a.beta * v;  // beta 0 overwrites, NaN included, as BLAS does
  });
}

// Launchers (elementwise.cu): the table's add, fill_rows and column_sum_accumulate, and gemm.cu's scale_rows.
int32_t add(float *out, const float *a, const float *b, int64_t n, void *stream);
int32_t fill_rows(float *out, int64_t stride, const float *values, int64_t N, int64_t width, void *stream);
int32_t column_sum_accumulate(float *sums, const float *x, int64_t stride, int64_t N, int64_t width, void *stream);
int32_t scale_rows(float *x, int64_t stride, float beta, int64_t N, int64_t width, void *stream);

}  // namespace cuda
}  // namespace moas
