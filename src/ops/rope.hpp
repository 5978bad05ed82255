// Rotary position embedding: pairs (2i, 2i+1) of every q and k head vector rotate by pos * base^(-2i/d).
// Applied in place on the fused qkv rows after the projection; backward rotates the gradient back.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "base/hd.hpp"
#include "base/parallel.hpp"

namespace moas {

template <typename T>
struct RopeTable {
  int64_t half = 0;         // d / 2
  std::vector<T> cos, sin;  // [positions(), d/2]

  // The rotation's shape, with no table yet: a model whose config claims a long context costs nothing for it until
  // its forwards reach those positions.
  void configure(int64_t block_size, int64_t head_dim, double base) {
    block_size_ = block_size;
    head_dim_ = head_dim;
    base_ = base;
    half = head_dim / 2;
    cos.clear();
    sin.clear();
  }
  int64_t positions() const { return half > 0 ? (int64_t)cos.size() / half : 0; }
  // Extends the table to positions [0, n) at least (n <= block_size), doubling so that growth costs O(1) per position.
  void cover(int64_t n) {
    const int64_t have = positions();
    if (n <= have) return;
    const int64_t want = std::min(block_size_, std::max(n, 2 * have));
    sin.resize((size_t)(want * half));  // sin first: positions() reads cos, so a failed resize leaves it as it was
    cos.resize((size_t)(want * half));
    for (int64_t p = have; p < want; p++)
      for (int64_t i = 0; i < half; i++) {
        const double angle = (double)p * std::pow(base_, -2.0 * (double)i / (double)head_dim_);
        cos[(size_t)(p * half + i)] = (T)std::cos(angle);
        sin[(size_t)(p * half + i)] = (T)std::sin(angle);
      }
  }
  // The whole table at once.
  void build(int64_t block_size, int64_t head_dim, double base) {
    configure(block_size, head_dim, base);
    cover(block_size);
  }

 private:
  int64_t block_size_ = 0, head_dim_ = 0;
  double base_ = 0;
};

// Rotates the pair v[0], v[1] by the angle whose cosine and sine are c and s (shared with cuda/rope.cuh).
template <typename T>
MOAS_HD inline void rope_rotate_pair(T *v, T c, T s) {
  const T x0 = v[0], x1 = v[1];
  v[0] = x0 * c - x1 * s;
  v[1] = x0 * s + x1 * c;
}

// Rotates n_heads consecutive head vectors starting at column `col0` of rows [0, m) of buf (row stride `stride`);
// row r sits at sequence position pos[r]. direction +1 applies the rotation (forward), -1 its inverse (backward on
// the gradient).
template <typename T>
void rope_rotate(T *buf, int64_t stride, int64_t col0, int64_t n_heads, int64_t m, const int32_t *pos,
                 const RopeTable<T> &table, int direction) {
  const int64_t half = table.half, d = 2 * half;
  parallel_for(m, m * n_heads * d >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; r++) {
      const T *cs = table.cos.data() + (int64_t)pos[r] * half, *sn = table.sin.data() + (int64_t)pos[r] * half;
      for (int64_t h = 0; h < n_heads; h++) {
        T *v = buf + r * stride + col0 + h * d;
        for (int64_t i = 0; i < half; i++) rope_rotate_pair(v + 2 * i, cs[i], direction * sn[i]);
      }
    }
  });
}

}  // namespace moas
