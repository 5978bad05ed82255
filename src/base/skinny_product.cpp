#include "base/skinny_product.hpp"

#include <algorithm>

#include "base/lanes.hpp"
#include "base/parallel.hpp"

namespace moas {

namespace {

using lanes::kLanes;
using lanes::load;
using lanes::Vec;

// out[n][r] = A_r . B_n for R rows of A and NB rows of B: R * NB vector accumulators, so that the FMAs of one step
// are independent of each other, and each B row is loaded once per step for all R rows.
// Each B row is short (1.5 KB at C = 384) and a few are read side by side, too little for the hardware prefetcher
// to run ahead of: the rows this many below are requested while these are summed (decode steps 10-30% faster on
// these machines, in alternating runs with and without). A single row of A reads one row of B at a time instead:
// one sequential stream, which the hardware prefetcher does follow (a batch-1 decode step 1.2-1.5x faster on one
// thread than with four rows side by side and these prefetches; tools/bench_decode.py, alternating runs).
constexpr int64_t kPrefetchRows = 8;

template <typename T, int R, int NB>
inline void dot_block(const T *A, int64_t lda, const T *B, int64_t ldb, int64_t K, T (&out)[NB][R]) {
  Vec<T> acc[NB][R];
#pragma GCC unroll 4
  for (int n = 0; n < NB; n++)
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) acc[n][r] = Vec<T>{};
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    Vec<T> a[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) a[r] = load(A + r * lda + k);
#pragma GCC unroll 4
    for (int n = 0; n < NB; n++) {
      const Vec<T> b = load(B + n * ldb + k);
      if constexpr (NB > 1) __builtin_prefetch(B + (n + kPrefetchRows) * ldb + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) acc[n][r] += a[r] * b;
    }
  }
  for (int n = 0; n < NB; n++)
    for (int r = 0; r < R; r++) {
      T sum = 0;
      for (int j = 0; j < kLanes; j++) sum += acc[n][r][j];
      for (int64_t t = k; t < K; t++) sum += A[r * lda + t] * B[n * ldb + t];
      out[n][r] = sum;
    }
}

// C[0..R, n0..n1) from A's R rows.
template <typename T, int R>
void rows_against(int64_t n0, int64_t n1, int64_t K, T alpha, const T *A, int64_t lda, const T *B, int64_t ldb,
                  T beta, T *C, int64_t ldc) {
  auto store = [&](int64_t n, int r, T value) {
    T &c = C[r * ldc + n];
    c = beta == T(0) ? alpha * value : alpha * value + beta * c;
  };
  constexpr int NB = R == 1 ? 1 : R == 2 ? 4 : 2;
  int64_t n = n0;
  for (; n + NB <= n1; n += NB) {
    T out[NB][R];
    dot_block<T, R, NB>(A, lda, B + n * ldb, ldb, K, out);
    for (int i = 0; i < NB; i++)
      for (int r = 0; r < R; r++) store(n + i, r, out[i][r]);
  }
  for (; n < n1; n++) {
    T out[1][R];
    dot_block<T, R, 1>(A, lda, B + n * ldb, ldb, K, out);
    for (int r = 0; r < R; r++) store(n, r, out[0][r]);
  }
}

// Rows of B per block: 8 rows of 384 floats are 12 KB, well inside L1 beside A's rows.
constexpr int64_t kBlockRows = 8;

}  // namespace

template <typename T>
void skinny_product_nt(int64_t M, int64_t N, int64_t K, T alpha, const T *A, int64_t lda, const T *B, int64_t ldb,
                       T beta, T *C, int64_t ldc) {
  parallel_for(N, N * K * (int64_t)sizeof(T) >= kFewRowThreadedBytes, [&](int64_t begin, int64_t end) {
    // A few rows of B at a time (they stay in L1) against the rows of A in groups of up to 4 (a group's
    // accumulators fill the vector registers): memory sees each row of B once.
    for (int64_t n0 = begin; n0 < end; n0 += kBlockRows) {
      const int64_t n1 = std::min(end, n0 + kBlockRows);
      for (int64_t m = 0; m < M; m += 4) {
        const T *a = A + m * lda;
        T *c = C + m * ldc;
        lanes::with_count<4>(M - m, [&](auto R) {
          rows_against<T, decltype(R)::value>(n0, n1, K, alpha, a, lda, B, ldb, beta, c, ldc);
        });
      }
    }
  });
}

template void skinny_product_nt<float>(int64_t, int64_t, int64_t, float, const float *, int64_t, const float *,
                                       int64_t, float, float *, int64_t);
template void skinny_product_nt<double>(int64_t, int64_t, int64_t, double, const double *, int64_t, const double *,
                                        int64_t, double, double *, int64_t);

}  // namespace moas
