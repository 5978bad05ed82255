// AdamW with PyTorch's semantics (decoupled decay, bias correction) and global gradient-norm clipping.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "base/hd.hpp"
#include "base/parallel.hpp"
#include "ops/params.hpp"

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

// The constants of step number `step` (1 for the first), in the parameters' type: the clip factor from the pre-clip
// norm, the bias corrections and the decay factor of tensors that decay. Shared with the CUDA kernel (cuda/adamw.cuh).
template <typename T>
struct AdamWFactors {
  T b1, b2, eps, step_size, bc2_sqrt, grad_scale, decay;
};

template <typename T>
AdamWFactors<T> adamw_factors(const AdamWSettings &s, uint64_t step, double grad_norm) {
  const double clip = (s.grad_clip > 0 && grad_norm > s.grad_clip) ? s.grad_clip / (grad_norm + 1e-6) : 1.0;
  const double bc1 = 1.0 - std::pow(s.beta1, (double)step);
  const double bc2 = 1.0 - std::pow(s.beta2, (double)step);
  const double decay = 1.0 - s.lr * s.weight_decay;
  return {(T)s.beta1, (T)s.beta2, (T)s.eps, (T)(s.lr / bc1), (T)std::sqrt(bc2), (T)clip, (T)decay};
}

// One element: the moments from the clipped gradient, then the (decayed) parameter.
template <typename T>
MOAS_HD inline void adamw_update(T *p, T *m, T *v, T g, const AdamWFactors<T> &f, bool decays) {
  const T gi = g * f.grad_scale;
  *m = f.b1 * *m + ((T)1 - f.b1) * gi;
  *v = f.b2 * *v + ((T)1 - f.b2) * gi * gi;
  *p = *p * (decays ? f.decay : (T)1) - f.step_size * *m / (std::sqrt(*v) / f.bc2_sqrt + f.eps);
}

// Applies one step. The caller has checked the norm is finite.
template <typename T>
void adamw_step(ParamTable<T> &params, AdamWState<T> &state, const AdamWSettings &s, double grad_norm) {
  if (state.exp_avg.size() != params.values.size()) {
    state.exp_avg.assign(params.values.size(), T(0));
    state.exp_avg_sq.assign(params.values.size(), T(0));
  }
  state.step++;
  const AdamWFactors<T> f = adamw_factors<T>(s, state.step, grad_norm);
  for (const ParamInfo &info : params.infos()) {
    T *p = params.values.data() + info.offset;
    const T *g = params.grads.data() + info.offset;
    T *m = state.exp_avg.data() + info.offset, *v = state.exp_avg_sq.data() + info.offset;
    const bool decays = info.decay;
#pragma omp parallel for simd schedule(static) if (info.numel >= kParallelGrain)
    for (int64_t i = 0; i < info.numel; i++) adamw_update(p + i, m + i, v + i, g[i], f, decays);
  }
}

}  // namespace moas
