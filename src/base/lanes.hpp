// 16 lanes: 64 bytes of floats, one AVX-512 register (two AVX2 ones, four SSE ones), through GCC's and Clang's vector
// extensions, for the CPU kernels that decoding leans on (skinny_product, packed_product, attention_decode's tiles);
// doubles (the finite-difference build) take two registers of each.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace moas {
namespace lanes {

constexpr int kLanes = 16;
typedef float FloatLanes __attribute__((vector_size(kLanes * sizeof(float))));
typedef double DoubleLanes __attribute__((vector_size(kLanes * sizeof(double))));
template <typename T>
struct LanesOf;
template <>
struct LanesOf<float> {
  using type = FloatLanes;
};
template <>
struct LanesOf<double> {
  using type = DoubleLanes;
};
template <typename T>
using Vec = typename LanesOf<T>::type;

// Unaligned: rows of caches and weights start wherever their strides put them.
template <typename T>
inline Vec<T> load(const T *p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
inline void store(T *p, const Vec<T> &v) {
  std::memcpy(p, &v, sizeof v);
}

// acc[r][v] += sum_k A[r][k] B[k][v kLanes ..] over k = 0 .. K-1 in order: each row of A broadcast a number at a time
// against NV vectors of each row of B (rows lda and ldb apart), every load of B serving all R rows.
template <typename T, int R, int NV>
inline void accumulate_broadcast(Vec<T> (&acc)[R][NV], const T *A, int64_t lda, const T *B, int64_t ldb, int64_t K) {
  for (int64_t k = 0; k < K; k++) {
    Vec<T> b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) b[v] = load(B + k * ldb + v * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      const T a = A[r * lda + k];
#pragma GCC unroll 8
      for (int v = 0; v < NV; v++) acc[r][v] += a * b[v];
    }
  }
}

// f(std::integral_constant<int, n>{}) for n in 1 .. Most (Most for anything larger): a kernel unrolled for each row
// or vector count it may meet, chosen at run time.
template <int Most, typename F>
inline void with_count(int64_t n, F &&f) {
  if constexpr (Most > 1) {
    if (n < Most) return with_count<Most - 1>(n, f);
  }
  f(std::integral_constant<int, Most>{});
}

}  // namespace lanes
}  // namespace moas
