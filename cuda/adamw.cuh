// AdamW on the GPU (the CUDA twin of src/ops/adamw.hpp): the global gradient norm and the step.
// gradient_norm: one block per chunk of MOAS_CUDA_GRAD_NORM_CHUNK values sums their squares in double (block_sum over
//                per-thread strided partials) into scratch; then one block sums the chunks' partials the same way.
//                A fixed order: the same bits on every run (not the CPU's bits: it sums each chunk in sequence).
// adamw_step:    one thread per element, the CPU's adamw_update with the CPU's factors (adamw_factors, computed on
//                the host); the element's tensor, and so whether it decays, found by bisection over the segments.
#pragma once

#include <cmath>
#include <cstdint>

#include "block.cuh"
#include "cuda_host/cuda_backend.h"
#include "ops/adamw.hpp"

namespace moas {
namespace cuda {

constexpr int kAdamWThreads = 256;
constexpr int64_t kGradNormChunk = MOAS_CUDA_GRAD_NORM_CHUNK;
using AdamWDeviceBlock = DeviceBlock<kAdamWThreads>;
using AdamWHostBlock = HostBlock<kAdamWThreads>;

struct GradNormArgs {
  double *norm;     // [1]
  double *partial;  // [chunks]
  const float *grads;
  int64_t n;
};

inline Grid grad_norm_chunk_grid(const GradNormArgs &a) { return {ceil_div(a.n, kGradNormChunk), 1, 1}; }
inline size_t grad_norm_shared_bytes() {
  SharedArena arena{nullptr};
  arena.take<double>(kAdamWThreads);
  return arena.used;
}

template <class Block>
MOAS_HD void grad_norm_chunk_block(const Block &block, const GradNormArgs &a, unsigned char *shared, int64_t chunk) {
  constexpr int T = Block::kThreads;
  SharedArena arena{shared};
  double *part = arena.take<double>(T);
  const int64_t end = min_i64(a.n, (chunk + 1) * kGradNormChunk);
  block.each([&](int t) {
    double s = 0.0;
    for (int64_t i = chunk * kGradNormChunk + t; i < end; i += T) s += (double)a.grads[i] * (double)a.grads[i];
    part[t] = s;
  });
  block_sum(block, part);
  block.each([&](int t) {
    if (t == 0) a.partial[chunk] = part[0];
  });
}

// One block: *norm = sqrt(the sum of the chunks' partials).
template <class Block>
MOAS_HD void grad_norm_total_block(const Block &block, const GradNormArgs &a, unsigned char *shared) {
  constexpr int T = Block::kThreads;
  SharedArena arena{shared};
  double *part = arena.take<double>(T);
  const int64_t chunks = ceil_div(a.n, kGradNormChunk);
  block.each([&](int t) {
    double s = 0.0;
    for (int64_t k = t; k < chunks; k += T) s += a.partial[k];
    part[t] = s;
  });
  block_sum(block, part);
  block.each([&](int t) {
    if (t == 0) *a.norm = std::sqrt(part[0]);
  });
}

struct AdamWArgs {
  AdamWFactors<float> f;
  float *params, *exp_avg, *exp_avg_sq;
  const float *grads;
  int64_t n;
  const int64_t *segment_begin;  // [n_segments + 1]
  const uint8_t *segment_decay;  // [n_segments]
  int64_t n_segments;
};

inline Grid adamw_grid(const AdamWArgs &a) { return {ceil_div(a.n, kAdamWThreads), 1, 1}; }

// The segment holding element e: the last s with segment_begin[s] <= e.
MOAS_HD inline int64_t segment_of(const int64_t *begin, int64_t n_segments, int64_t e) {
  int64_t lo = 0, hi = n_segments - 1;
  while (lo < hi) {
    const int64_t mid = hi - (hi - lo) / 2;
    if (begin[mid] <= e)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

template <class Block>
MOAS_HD void adamw_step_block(const Block &block, const AdamWArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t e = x * Block::kThreads + t;
    if (e >= a.n) return;
    const bool decays = a.segment_decay[segment_of(a.segment_begin, a.n_segments, e)] != 0;
    adamw_update(a.params + e, a.exp_avg + e, a.exp_avg_sq + e, a.grads[e], a.f, decays);
  });
}

// Launchers (adamw.cu); the table's gradient_norm and adamw_step.
int32_t gradient_norm(double *norm, double *scratch, const float *grads, int64_t n, void *stream);
int32_t adamw_step(const moas_cuda_adamw_settings *settings, uint64_t step, double grad_norm, float *params,
                   const float *grads, float *exp_avg, float *exp_avg_sq, int64_t n, const int64_t *segment_begin,
                   const uint8_t *segment_decay, int64_t n_segments, void *stream);

}  // namespace cuda
}  // namespace moas
