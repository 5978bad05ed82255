// AdamW with PyTorch's semantics (decoupled decay, bias correction) and global gradient-norm clipping.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
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
  // Kept per calling thread, so a step allocates nothing once a model's size has been seen. The workers below write
  // through a pointer: naming the thread_local inside the region would give each worker its own.
  thread_local std::vector<double> kept;
  kept.resize((size_t)n_chunks);
  double *partial = kept.data();
  parallel_for(n_chunks, n >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; c++) {
      double s = 0;
      const int64_t chunk_end = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < chunk_end; i++) s += (double)grads[(size_t)i] * (double)grads[(size_t)i];
      partial[c] = s;
    }
  });
  double total = 0;
  for (int64_t c = 0; c < n_chunks; c++) total += partial[c];
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
// Every multiply-add is an explicit fma: left to the compiler, contraction differs between a vectorised loop's body
// and its scalar remainder (seen at -O2), so an element's bits would depend on its alignment and on the caller.
template <typename T>
MOAS_HD inline void adamw_update(T *p, T *m, T *v, T g, const AdamWFactors<T> &f, bool decays) {
  const T gi = g * f.grad_scale;
  *m = std::fma(f.b1, *m, ((T)1 - f.b1) * gi);
  *v = std::fma(f.b2, *v, (((T)1 - f.b2) * gi) * gi);
  const T update = f.step_size * *m / (std::sqrt(*v) / f.bc2_sqrt + f.eps);
  *p = std::fma(*p, decays ? f.decay : (T)1, -update);
}

// Elements [begin, end) of one tensor (decays: its decay factor applies). The one loop every CPU step runs, the CUDA
// backend's table of CPU functions included, so they vectorise (and round) alike.
template <typename T>
void adamw_update_span(T *p, T *m, T *v, const T *g, int64_t begin, int64_t end, const AdamWFactors<T> &f,
                       bool decays) {
#pragma omp simd
  for (int64_t i = begin; i < end; i++) adamw_update(p + i, m + i, v + i, g[i], f, decays);
}

// The largest magnitudes in the buffers a step reads: gradients, parameters, first moments, second moments (Inf
// when one holds NaN or Inf).
struct AdamWMaxima {
  double grad = 0, param = 0, exp_avg = 0, exp_avg_sq = 0;
};

// max |x[i]| over [begin, end) as the bits of a float: for non-negative floats the bit patterns order as the values
// do, with Inf and then every NaN above all finite ones, so an integer maximum (which vectorises without fast-math)
// finds both the largest magnitude and any non-finite value.
inline uint32_t max_magnitude_bits(const float *x, int64_t begin, int64_t end) {
  uint32_t top = 0;
  for (int64_t i = begin; i < end; i++) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    top = std::max(top, bits & 0x7fffffffu);
  }
  return top;
}

inline double magnitude_of_bits(uint32_t bits) {
  if (bits >= 0x7f800000u) return std::numeric_limits<double>::infinity();
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline AdamWMaxima adamw_maxima(const ParamTable<float> &params, const AdamWState<float> &state) {
  const int64_t n = (int64_t)params.values.size();
  const bool fresh = state.exp_avg.size() != params.values.size();
  const float *buffers[4] = {params.grads.data(), params.values.data(), fresh ? nullptr : state.exp_avg.data(),
                             fresh ? nullptr : state.exp_avg_sq.data()};
  std::atomic<uint32_t> top[4] = {0, 0, 0, 0};
  parallel_for(n, n >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int k = 0; k < 4; k++) {
      if (!buffers[k]) continue;
      const uint32_t mine = max_magnitude_bits(buffers[k], begin, end);
      uint32_t seen = top[k].load();
      while (mine > seen && !top[k].compare_exchange_weak(seen, mine)) {
      }
    }
  });
  return {magnitude_of_bits(top[0]), magnitude_of_bits(top[1]), magnitude_of_bits(top[2]), magnitude_of_bits(top[3])};
}

// Whether the maxima alone prove the next step finite: each moment stays within the larger of its old bound and the
// (scaled) gradient's, the update within step_size * |m| / eps. Cheap (no square root or division per element), and
// true in any sane training; when it is not, adamw_step_stays_finite decides exactly.
template <typename T>
bool adamw_step_surely_finite(const AdamWMaxima &x, const AdamWSettings &s, uint64_t step, double grad_norm) {
  const AdamWFactors<double> f = adamw_factors<double>(s, step, grad_norm);
  const double limit = 1e-2 * (double)std::numeric_limits<T>::max();  // room for rounding on the way
  const double g = x.grad * f.grad_scale, m = std::max(x.exp_avg, g);
  const double update = f.step_size * m / f.eps;
  return g * g < limit && m < limit && x.exp_avg_sq < limit && x.param + update < limit;  // false for Inf
}

// Whether the next step would leave every parameter and moment finite, computed as adamw_update_span would but
// writing nothing, so a step that would not (lr too large for the moments a file brought, a gradient whose square
// overflows, a NaN gradient) is refused whole instead of half applied. x - x is 0 for a finite x and NaN otherwise,
// so one sum tells.
template <typename T>
bool adamw_step_stays_finite(const ParamTable<T> &params, const AdamWState<T> &state, const AdamWSettings &s,
                             double grad_norm) {
  const AdamWFactors<T> f = adamw_factors<T>(s, state.step + 1, grad_norm);
  const int64_t n = (int64_t)params.values.size();
  const bool fresh = state.exp_avg.size() != params.values.size();  // the first step starts from zero moments
  const T *p = params.values.data(), *g = params.grads.data();
  const T *m = fresh ? nullptr : state.exp_avg.data(), *v = fresh ? nullptr : state.exp_avg_sq.data();
  const std::vector<ParamInfo> &infos = params.infos();
  std::atomic<bool> finite{true};
  parallel_for(n, n >= kParallelGrain, [&](int64_t begin, int64_t end) {
    T sum = 0;
    for (const ParamInfo &info : infos) {
      const int64_t lo = std::max(begin, info.offset), hi = std::min(end, info.offset + info.numel);
#pragma omp simd reduction(+ : sum)
      for (int64_t i = lo; i < hi; i++) {
        T pi = p[i], mi = m ? m[i] : T(0), vi = v ? v[i] : T(0);
        adamw_update(&pi, &mi, &vi, g[i], f, info.decay);
        sum += (pi - pi) + (mi - mi) + (vi - vi);
      }
    }
    if (!(sum == 0)) finite = false;
  });
  return finite;
}

// Applies one step in one pass over the flat buffers: each thread takes a slice of them, walking the tensors only to
// switch their decay. The caller has checked that the gradients are finite.
template <typename T>
void adamw_step(ParamTable<T> &params, AdamWState<T> &state, const AdamWSettings &s, double grad_norm) {
  if (state.exp_avg.size() != params.values.size()) {
    state.exp_avg.assign(params.values.size(), T(0));
    state.exp_avg_sq.assign(params.values.size(), T(0));
  }
  state.step++;
  const AdamWFactors<T> f = adamw_factors<T>(s, state.step, grad_norm);
  const int64_t n = (int64_t)params.values.size();
  T *p = params.values.data(), *m = state.exp_avg.data(), *v = state.exp_avg_sq.data();
  const T *g = params.grads.data();
  const std::vector<ParamInfo> &infos = params.infos();
  parallel_for(n, n >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (const ParamInfo &info : infos)
      adamw_update_span(p, m, v, g, std::max(begin, info.offset), std::min(end, info.offset + info.numel), f,
                        info.decay);
  });
}

}  // namespace moas
