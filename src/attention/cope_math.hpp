// The per-row arithmetic of CoPE (contextual position encoding, SPEC §7), shared by the CPU kernel
// (cope_attention.cpp) and the CUDA kernels: a query's positions over its visible keys, counted by its gates, and the
// position logit interpolated between the integer ones, each with its backward.
#pragma once

#include <cstdint>

#include "base/hd.hpp"

namespace moas {

// p_j = min(sum_{t=j..n-1} g_t, max_pos - 1) for the n keys a query sees, the last being its own position: how many
// keys from j up to the query its gates count. Summed from the query backwards, so every backend adds in the same
// order. `positions` may be `gates` itself (p_j is written after g_j is read). `after` is the sum of the gates of
// keys past these n (a GPU block splits a row's keys into chunks); 0 for a whole row.
template <typename T>
MOAS_HD inline void cope_positions(const T *gates, int64_t n, int64_t max_pos, T *positions, T after = T(0)) {
  const T cap = T(max_pos - 1);
  T sum = after;
  for (int64_t j = n - 1; j >= 0; --j) {
    sum += gates[j];
    positions[j] = sum < cap ? sum : cap;
  }
}

// Backward of cope_positions: dL/dg_t = sum_{j <= t} dL/dp_j. The clamp needs no mask here: a clamped p_j sits on the
// integer max_pos - 1, where cope_slope is 0, so its dL/dp_j is already 0. `d_gates` may be `d_positions`. `before`
// is the sum of dL/dp_j of the keys before these n (0 for a whole row).
template <typename T>
MOAS_HD inline void cope_positions_backward(const T *d_positions, int64_t n, T *d_gates, T before = T(0)) {
  T sum = before;
  for (int64_t t = 0; t < n; ++t) {
    sum += d_positions[t];
    d_gates[t] = sum;
  }
}

// The integers around p >= 0 and p's share of the upper one: p = lo + frac, hi = lo + 1 unless p is an integer.
template <typename T>
struct CopeSegment {
  int64_t lo, hi;
  T frac;
};

template <typename T>
MOAS_HD inline CopeSegment<T> cope_segment(T p) {
  const int64_t lo = (int64_t)p;  // p >= 0: truncation is floor
  const T frac = p - T(lo);
  return {lo, frac > T(0) ? lo + 1 : lo, frac};
}

// The position logit q . e(p) = frac z[hi] + (1 - frac) z[lo] from z[n] = q . e[n]: interpolating the P dot products
// is q . e(p) without ever forming e(p).
template <typename T>
MOAS_HD inline T cope_interpolate(const T *z, T p) {
  const CopeSegment<T> s = cope_segment(p);
  return s.frac * z[s.hi] + (T(1) - s.frac) * z[s.lo];
}

// d cope_interpolate / dp: the slope of the segment p lies on; 0 on an integer (as autograd gives the reference's
// frac-weighted gather there).
template <typename T>
MOAS_HD inline T cope_slope(const T *z, T p) {
  const CopeSegment<T> s = cope_segment(p);
  return z[s.hi] - z[s.lo];
}

// Backward of cope_interpolate into z: dz[lo] += d (1 - frac), dz[hi] += d frac.
template <typename T>
MOAS_HD inline void cope_interpolate_backward(T d, T p, T *dz) {
  const CopeSegment<T> s = cope_segment(p);
  dz[s.lo] += d * (T(1) - s.frac);
  dz[s.hi] += d * s.frac;
}

}  // namespace moas
