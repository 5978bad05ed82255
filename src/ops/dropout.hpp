// Counter-based dropout masks: keep(element) is a pure function of (seed, step, layer, site, element), so a mask
// never depends on thread count, loop order, batch composition or backend, and backward regenerates it instead
// of storing it. The mask functions are MOAS_HD: the CUDA kernels draw the same bits.
#pragma once

#include <cstdint>

#include "base/hd.hpp"
#include "base/parallel.hpp"

namespace moas {

enum class DropoutSiteId : uint32_t { Embedding = 1, AttentionProbs = 2, AttentionOut = 3, MlpOut = 4, Gates = 5 };

// The sites of MoAS branch k > 0 are distinct streams; branch 0 (and a plain scheme) keeps the plain site ids.
inline uint32_t branch_site(DropoutSiteId site, int64_t branch) { return (uint32_t)site + 16u * (uint32_t)branch; }

// splitmix64's finaliser: a bijective mix with full avalanche, cheap enough to call per element.
MOAS_HD inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

struct Dropout {
  float p = 0.0f;  // drop probability; 0 disables the site
  uint64_t key = 0;

  static Dropout at(float p, uint64_t seed, uint64_t step, uint32_t layer, uint32_t site) {
    Dropout d;
    d.p = p;
    d.key = mix64(mix64(mix64(seed) ^ step) ^ ((uint64_t)layer << 32 | site));
    return d;
  }
  static Dropout at(float p, uint64_t seed, uint64_t step, uint32_t layer, DropoutSiteId site) {
    return at(p, seed, step, layer, (uint32_t)site);
  }
  MOAS_HD bool active() const { return p > 0.0f; }
  // True when `element` survives. Uses the top 24 bits as a uniform in [0, 1).
  MOAS_HD bool keep(uint64_t element) const {
    const uint64_t r = mix64(key ^ mix64(element));
    return (float)(r >> 40) * (1.0f / 16777216.0f) >= p;
  }
  // The multiplier applied to `element`: 0 or 1 / (1 - p).
  template <typename T>
  MOAS_HD T factor(uint64_t element) const {
    return keep(element) ? (T)1 / (T)(1 - (T)p) : (T)0;
  }
};

}  // namespace moas

namespace moas {

// x[i] *= keep(i) / (1 - p) for i in [0, n), in place; the same call on a gradient is the backward.
template <typename T>
void dropout_apply(T *x, int64_t n, const Dropout &dropout) {
  if (!dropout.active()) return;
  parallel_for(n, n >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) x[i] *= dropout.factor<T>((uint64_t)i);
  });
}


// Row r of x [m, width] is token row[r]: element (row[r], c) keeps the mask it has in the full [N, width] tensor.
template <typename T>
void dropout_apply_rows(T *x, int64_t m, int64_t width, const int64_t *row, const Dropout &dropout) {
  if (!dropout.active()) return;
  parallel_for(m, m * width >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; r++)
      for (int64_t c = 0; c < width; c++) x[r * width + c] *= dropout.factor<T>((uint64_t)(row[r] * width + c));
  });
}

}  // namespace moas
