// Dropout on the GPU (the CUDA twin of src/ops/dropout.hpp): one thread per element, multiplying by the CPU's
// Dropout::factor, so a mask keyed by (seed, step, layer, site) drops the same elements on both backends.
#pragma once

#include <cstdint>

#include "block.cuh"
#include "cuda_host/cuda_backend.h"
#include "ops/dropout.hpp"

namespace moas {
namespace cuda {

constexpr int kDropoutThreads = 256;
using DropoutDeviceBlock = DeviceBlock<kDropoutThreads>;
using DropoutHostBlock = HostBlock<kDropoutThreads>;

struct DropoutArgs {
  float *x;  // [m, width]
  int64_t m, width;
  const int64_t *row;  // [m]: row r is token row[r] (dropout_apply_rows), or null (dropout_apply)
  Dropout dropout;
};

inline Grid dropout_grid(const DropoutArgs &a) { return {ceil_div(a.m * a.width, kDropoutThreads), 1, 1}; }

template <class Block>
MOAS_HD void dropout_apply_block(const Block &block, const DropoutArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t e = x * Block::kThreads + t;
    if (e >= a.m * a.width) return;
    const uint64_t element = a.row ? (uint64_t)(a.row[e / a.width] * a.width + e % a.width) : (uint64_t)e;
    a.x[e] *= a.dropout.factor<float>(element);
  });
}

// Launcher (dropout.cu); the table's dropout_apply.
int32_t dropout_apply(float *x, int64_t m, int64_t width, const int64_t *row, const moas_cuda_dropout *dropout,
                      void *stream);

}  // namespace cuda
}  // namespace moas
