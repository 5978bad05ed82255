// Softmax cross-entropy on the GPU (the CUDA twin of src/ops/loss.hpp), forward and backward.
// forward: one block per row: its max and sum of fast_exp(logit - max) as block_max / block_sum trees, lse kept for
//          the backward; then one block sums the counted rows' losses (lse - logit[target], in double) in a fixed order
//          into the mean, as the CPU's sum in row order is independent of its thread count.
// backward: one block per row, (softmax - onehot) * scale, zero on ignored rows.
#pragma once

#include <cmath>
#include <cstdint>

#include "base/fast_math.hpp"
#include "block.cuh"

namespace moas {
namespace cuda {

constexpr int kLossThreads = 256;
using LossDeviceBlock = DeviceBlock<kLossThreads>;
using LossHostBlock = HostBlock<kLossThreads>;

struct LossArgs {
  float *lse_out;          // forward: [N]
  double *loss;            // forward with targets: the mean over counted rows (0 when none)
  int64_t *counted;        // forward with targets: how many rows have a target
  float *dlogits;          // backward: [N, V]
  const float *lse;        // [N]: lse_out once the forward wrote it; the backward's input
  const float *logits;     // [N, V]
  const int32_t *targets;  // [N], -1 ignored; may be null in the forward
  int64_t N, V;
  float scale;  // backward
};

inline Grid loss_row_grid(const LossArgs &a) { return {a.N, 1, 1}; }
inline size_t loss_row_shared_bytes() {  // per-thread maxima and sums
  SharedArena arena{nullptr};
  arena.take<float>(kLossThreads);
  arena.take<float>(kLossThreads);
  return arena.used;
}
inline size_t loss_mean_shared_bytes() {  // per-thread loss sums and counts
  SharedArena arena{nullptr};
  arena.take<double>(kLossThreads);
  arena.take<int64_t>(kLossThreads);
  return arena.used;
}

template <class Block>
MOAS_HD void cross_entropy_lse_block(const Block &block, const LossArgs &a, unsigned char *shared, int64_t n) {
  constexpr int T = Block::kThreads;
  SharedArena arena{shared};
  float *mx = arena.take<float>(T), *sum = arena.take<float>(T);
  const float *row = a.logits + n * a.V;
  block.each([&](int t) {
    float m = row[0];
    for (int64_t v = t; v < a.V; v += T) m = row[v] > m ? row[v] : m;
    mx[t] = m;
  });
  block_max(block, mx);
  const float row_max = mx[0];
  block.each([&](int t) {
    float s = 0.0f;
    for (int64_t v = t; v < a.V; v += T) s += fast_exp(row[v] - row_max);
    sum[t] = s;
  });
  block_sum(block, sum);
  const float total = sum[0];
  block.each([&](int t) {
    if (t == 0) a.lse_out[n] = row_max + std::log(total);
  });
}

// One block: *loss and *counted from lse and the targets.
template <class Block>
MOAS_HD void cross_entropy_mean_block(const Block &block, const LossArgs &a, unsigned char *shared) {
  constexpr int T = Block::kThreads;
  SharedArena arena{shared};
  double *total = arena.take<double>(T);
  int64_t *count = arena.take<int64_t>(T);
  block.each([&](int t) {
    double s = 0.0;
    int64_t c = 0;
    for (int64_t n = t; n < a.N; n += T) {
      if (a.targets[n] < 0) continue;
      s += (double)(a.lse[n] - a.logits[n * a.V + a.targets[n]]);
      ++c;
    }
    total[t] = s;
    count[t] = c;
  });
  block_sum(block, total);
  block_sum(block, count);
  block.each([&](int t) {
    if (t > 0) return;
    *a.counted = count[0];
    *a.loss = count[0] ? total[0] / (double)count[0] : 0.0;
  });
}

template <class Block>
MOAS_HD void cross_entropy_backward_block(const Block &block, const LossArgs &a, int64_t n) {
  constexpr int T = Block::kThreads;
  const int32_t target = a.targets[n];
  const float *row = a.logits + n * a.V;
  const float lse = a.lse[n];
  float *d = a.dlogits + n * a.V;
  block.each([&](int t) {
    for (int64_t v = t; v < a.V; v += T) {
      if (target < 0) {
        d[v] = 0.0f;
        continue;
      }
      d[v] = fast_exp(row[v] - lse) * a.scale;
      if (v == target) d[v] -= a.scale;
    }
  });
}

// Launchers (loss.cu); the table's cross_entropy_forward and cross_entropy_backward.
int32_t cross_entropy_forward(float *lse, double *loss, int64_t *n_counted, const float *logits, const int32_t *targets,
                              int64_t N, int64_t V, void *stream);
int32_t cross_entropy_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets, int64_t N,
                               int64_t V, float scale, void *stream);

}  // namespace cuda
}  // namespace moas
