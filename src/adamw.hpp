// AdamW with PyTorch's semantics (decoupled decay, bias correction) and global gradient-norm clipping.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "parallel.hpp"
#include "params.hpp"

namespace moas {

struct AdamWSettings {
  double lr, beta1, beta2, eps, weight_decay, grad_clip;
};

template <typename T>
struct AdamWState {
  std::vector<T> exp_avg, exp_avg_sq;  // flat, same layout as the parameters
  uint64_t step = 0;
};

// Global L2 norm of the gradients. Partial sums over fixed 4096-element chunks, added in chunk order: the same
// bits for any thread count.
template <typename T>
double gradient_norm(const std::vector<T> &grads) {
  constexpr int64_t kChunk = 4096;
  const int64_t n = (int64_t)grads.size(), n_chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial((size_t)n_chunks);
#pragma omp parallel for schedule(static) if (n >= kParallelGrain)
  for (int64_t c = 0; c < n_chunks; c++) {
    double s = 0;
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; i++) s += (double)grads[(size_t)i] * (double)grads[(size_t)i];
    partial[(size_t)c] = s;
  }
  double total = 0;
  for (double s : partial) total += s;
  return std::sqrt(total);
}

// Applies one step; returns the pre-clip norm. The caller has checked the norm is finite.
template <typename T>
void adamw_step(ParamTable<T> &params, AdamWState<T> &state, const AdamWSettings &s, double grad_norm) {
  if (state.exp_avg.size() != params.values.size()) {
    state.exp_avg.assign(params.values.size(), T(0));
    state.exp_avg_sq.assign(params.values.size(), T(0));
  }
  state.step++;
  const double clip = (s.grad_clip > 0 && grad_norm > s.grad_clip) ? s.grad_clip / (grad_norm + 1e-6) : 1.0;
  const double bc1 = 1.0 - std::pow(s.beta1, (double)state.step);
  const double bc2 = 1.0 - std::pow(s.beta2, (double)state.step);
  const T step_size = (T)(s.lr / bc1), bc2_sqrt = (T)std::sqrt(bc2);
  const T b1 = (T)s.beta1, b2 = (T)s.beta2, eps = (T)s.eps, g_scale = (T)clip;
  for (const ParamInfo &info : params.infos()) {
    const T decay = info.decay ? (T)(1.0 - s.lr * s.weight_decay) : (T)1;
    T *p = params.values.data() + info.offset;
    const T *g = params.grads.data() + info.offset;
    T *m = state.exp_avg.data() + info.offset, *v = state.exp_avg_sq.data() + info.offset;
#pragma omp parallel for simd schedule(static) if (info.numel >= kParallelGrain)
    for (int64_t i = 0; i < info.numel; i++) {
      const T gi = g[i] * g_scale;
      m[i] = b1 * m[i] + ((T)1 - b1) * gi;
      v[i] = b2 * v[i] + ((T)1 - b2) * gi * gi;
      p[i] = p[i] * decay - step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
    }
  }
}

}  // namespace moas
