#include "base/packed_product.hpp"

#include <algorithm>
#include <cstring>

#include "base/lanes.hpp"
#include "base/parallel.hpp"
#include "base/skinny_product.hpp"

namespace moas {

namespace {

using lanes::kLanes;
using lanes::Vec;

// A panel row is 32 floats: two vectors. Eight rows of A keep 16 accumulators and two panel vectors live: no spills,
// and 10 loads (2 of W, 8 broadcasts) per 16 FMAs.
constexpr int kVectors = (int)PackedMatrix<float>::kPanelRows / kLanes;

// C[r][n0 + j] for R rows of A against one panel (n0 = its first row of W, `valid` of its rows real).
template <typename T, int R>
void panel_against(const T *A, int64_t lda, const T *panel, int64_t K, int64_t n0, int64_t valid, T beta, T *C,
                   int64_t ldc) {
  constexpr int64_t P = PackedMatrix<T>::kPanelRows;
  Vec<T> acc[R][kVectors];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 2
    for (int v = 0; v < kVectors; v++) acc[r][v] = Vec<T>{};
  lanes::accumulate_broadcast<T, R, kVectors>(acc, A, lda, panel, P, K);
  for (int r = 0; r < R; r++) {
    T out[P];
    std::memcpy(out, acc[r], sizeof out);
    T *c = C + r * ldc + n0;
    for (int64_t j = 0; j < valid; j++) c[j] = beta == T(0) ? out[j] : out[j] + beta * c[j];
  }
}

}  // namespace

template <typename T>
PackedMatrix<T> pack_matrix(const T *W, int64_t N, int64_t K, int64_t ldw) {
  constexpr int64_t P = PackedMatrix<T>::kPanelRows;
  PackedMatrix<T> packed;
  packed.rows = N;
  packed.cols = K;
  packed.panels.assign((size_t)(packed.panel_count() * P * K), T(0));
  for (int64_t n = 0; n < N; n++) {
    T *to = packed.panels.data() + (n / P) * P * K + n % P;
    for (int64_t k = 0; k < K; k++) to[k * P] = W[n * ldw + k];
  }
  return packed;
}

template <typename T>
void packed_product(int64_t M, const T *A, int64_t lda, const PackedMatrix<T> &W, T beta, T *C, int64_t ldc) {
  constexpr int64_t P = PackedMatrix<T>::kPanelRows;
  const int64_t K = W.cols, panels = W.panel_count();
  parallel_for(panels, W.rows * K * (int64_t)sizeof(T) >= kFewRowThreadedBytes, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; p++) {
      const T *panel = W.panels.data() + p * P * K;
      const int64_t n0 = p * P, valid = std::min(P, W.rows - n0);
      lanes::with_count<kSkinnyRows>(M, [&](auto R) {
        panel_against<T, decltype(R)::value>(A, lda, panel, K, n0, valid, beta, C, ldc);
      });
    }
  });
}

template PackedMatrix<float> pack_matrix<float>(const float *, int64_t, int64_t, int64_t);
template PackedMatrix<double> pack_matrix<double>(const double *, int64_t, int64_t, int64_t);
template void packed_product<float>(int64_t, const float *, int64_t, const PackedMatrix<float> &, float, float *,
                                    int64_t);
template void packed_product<double>(int64_t, const double *, int64_t, const PackedMatrix<double> &, double,
                                     double *, int64_t);

}  // namespace moas
