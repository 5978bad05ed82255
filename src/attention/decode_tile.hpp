// The two products of decode attention over one tile of cached keys (attention_decode.cpp), for head dimensions that
// are a whole number of 16-lane vectors, up to 8 (d = 16, 32, ... 128):
//   scores  S_i[j] = scale q_i . k_j for the query rows of one kv head and the tile's keys, 16 keys at a time with one
//           accumulator each, whose lanes are then summed together by a transposing tree: a score costs a sixteenth
//           of a tree, where summing its own lanes would cost 15 adds beside the 4 FMAs of a 64-wide dot;
//   values  acc_i += sum_j P_i[j] v_j with a few rows' accumulators held in registers across the tile's keys, each
//           value row loaded once for all of them.
// A score's lanes are summed in the same tree whatever the key's place in its block, and a value sum runs over the
// keys in order, so results depend on neither the batch nor the thread count.
#pragma once

#include <cstdint>

#include "base/lanes.hpp"

namespace moas {

constexpr int kTileMostVectors = 8;

inline bool tile_kernels_fit(int64_t d) {
  return d % lanes::kLanes == 0 && d / lanes::kLanes <= kTileMostVectors;
}

namespace decode_tile {

using lanes::kLanes;
using lanes::load;
using lanes::Vec;

// Lane j of the result = the sum of x[j]'s lanes, as ((l_i + l_i+8) + (l_i+4 + l_i+12)) + ... for every j: each level
// adds the two halves of pairs of vectors and interleaves the pairs.
template <typename T>
inline Vec<T> lane_sums(const Vec<T> (&x)[kLanes]) {
  Vec<T> y[8], z[4], w[2];
  for (int p = 0; p < 8; p++)
    y[p] = __builtin_shufflevector(x[2 * p], x[2 * p + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           __builtin_shufflevector(x[2 * p], x[2 * p + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  for (int q = 0; q < 4; q++)
    z[q] = __builtin_shufflevector(y[2 * q], y[2 * q + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
           __builtin_shufflevector(y[2 * q], y[2 * q + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  for (int r = 0; r < 2; r++)
    w[r] = __builtin_shufflevector(z[2 * r], z[2 * r + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
           __builtin_shufflevector(z[2 * r], z[2 * r + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  return __builtin_shufflevector(w[0], w[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(w[0], w[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

// acc[r][0 .. NV) += sum_j P[r][j] v_j for R rows (rows of P s_stride apart, of acc acc_stride apart).
template <typename T, int NV, int R>
void values_rows(const T *P, int64_t s_stride, const T *V, int64_t v_stride, int64_t nk, T *acc, int64_t acc_stride) {
  Vec<T> a[R][NV];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) a[r][v] = load(acc + r * acc_stride + v * kLanes);
  lanes::accumulate_broadcast<T, R, NV>(a, P, s_stride, V, v_stride, nk);
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) lanes::store(acc + r * acc_stride + v * kLanes, a[r][v]);
}

// Rows in fours for up to 4 vectors each (16 accumulators), in twos beyond, the rest one by one.
template <typename T, int NV>
void values(const T *P, int64_t s_stride, int64_t n, const T *V, int64_t v_stride, int64_t nk, T *acc,
            int64_t acc_stride) {
  constexpr int R = NV <= 4 ? 4 : 2;
  int64_t i = 0;
  for (; i + R <= n; i += R)
    values_rows<T, NV, R>(P + i * s_stride, s_stride, V, v_stride, nk, acc + i * acc_stride, acc_stride);
  for (; i < n; i++) values_rows<T, NV, 1>(P + i * s_stride, s_stride, V, v_stride, nk, acc + i * acc_stride, acc_stride);
}

template <typename T, int NV>
void scores(const T *Q, int64_t n, const T *K, int64_t k_stride, int64_t nk, T scale, T *S, int64_t s_stride) {
  for (int64_t i = 0; i < n; i++) {
    Vec<T> q[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) q[v] = load(Q + i * NV * kLanes + v * kLanes);
    for (int64_t j0 = 0; j0 < nk; j0 += kLanes) {
      const int64_t keys = nk - j0 < kLanes ? nk - j0 : kLanes;
      Vec<T> acc[kLanes];
#pragma GCC unroll 16
      for (int j = 0; j < kLanes; j++) {
        acc[j] = Vec<T>{};
        if (j < keys)  // a last block's missing keys stay zero: each lane of the sums is one key's alone
#pragma GCC unroll 8
          for (int v = 0; v < NV; v++) acc[j] += q[v] * load(K + (j0 + j) * k_stride + v * kLanes);
      }
      const Vec<T> sums = lane_sums<T>(acc) * scale;
      for (int64_t j = 0; j < keys; j++) S[i * s_stride + j0 + j] = sums[j];
    }
  }
}

}  // namespace decode_tile

// S[i][j] = scale Q_i . K_j for i < n query rows (contiguous, d each) and j < nk keys (rows k_stride apart).
template <typename T>
void tile_scores(const T *Q, int64_t n, const T *K, int64_t k_stride, int64_t nk, int64_t d, T scale, T *S,
                 int64_t s_stride) {
  lanes::with_count<kTileMostVectors>(d / lanes::kLanes, [&](auto NV) {
    decode_tile::scores<T, decltype(NV)::value>(Q, n, K, k_stride, nk, scale, S, s_stride);
  });
}

// acc_i[0 .. d) += sum_j P_i[j] V_j for i < n rows (P's s_stride apart, acc's acc_stride apart), j < nk.
template <typename T>
void tile_values(const T *P, int64_t s_stride, int64_t n, const T *V, int64_t v_stride, int64_t nk, int64_t d, T *acc,
                 int64_t acc_stride) {
  lanes::with_count<kTileMostVectors>(d / lanes::kLanes, [&](auto NV) {
    decode_tile::values<T, decltype(NV)::value>(P, s_stride, n, V, v_stride, nk, acc, acc_stride);
  });
}

}  // namespace moas
