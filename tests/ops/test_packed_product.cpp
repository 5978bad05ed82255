// The packed few-row product (src/base/packed_product.cpp, which decode steps run on the model's re-laid weights)
// against a float64 loop, over every row count it serves, row counts around its 32-row panels and strides wider
// than the rows; and its promises: beta = 0 never reads C, each element is the same bits whatever the other rows, the
// row count or the thread count.
#include <omp.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "base/packed_product.hpp"
#include "base/skinny_product.hpp"
#include "random_floats.hpp"

using ops_test::random_floats;

TEST_CASE("the packed product matches a float64 loop", "[ops][gemm]") {
  for (int64_t M = 1; M <= moas::kSkinnyRows; ++M)
    for (int64_t K : {1, 17, 100})
      for (int64_t N : {1, 31, 32, 33, 70}) {
        const int64_t lda = K + 3, ldw = K + 5, ldc = N + 2;
        const std::vector<float> A = random_floats((size_t)(M * lda), 1), W = random_floats((size_t)(N * ldw), 2);
        const std::vector<float> C0 = random_floats((size_t)(M * ldc), 3);
        const moas::PackedMatrix<float> packed = moas::pack_matrix(W.data(), N, K, ldw);
        REQUIRE(packed.panel_count() == (N + 31) / 32);
        for (float beta : {0.0f, 1.0f, -0.5f}) {
          std::vector<float> C = C0;
          moas::packed_product(M, A.data(), lda, packed, beta, C.data(), ldc);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < ldc; ++n) {
              const size_t at = (size_t)(m * ldc + n);
              if (n >= N) {
                REQUIRE(C[at] == C0[at]);  // past the N columns (the panel's padding rows): untouched
                continue;
              }
              double dot = 0;
              for (int64_t k = 0; k < K; ++k) dot += (double)A[(size_t)(m * lda + k)] * W[(size_t)(n * ldw + k)];
              INFO("M " << M << " N " << N << " K " << K << " beta " << beta);
              REQUIRE(std::abs(C[at] - (dot + (double)beta * C0[at])) < 1e-5 * (1.0 + std::sqrt((double)K)));
            }
        }
      }
}

TEST_CASE("the packed product with beta 0 ignores what C held", "[ops][gemm]") {
  const int64_t M = 3, N = 40, K = 33;
  const std::vector<float> A = random_floats((size_t)(M * K), 4), W = random_floats((size_t)(N * K), 5);
  const moas::PackedMatrix<float> packed = moas::pack_matrix(W.data(), N, K, K);
  std::vector<float> clean((size_t)(M * N), 0.0f), dirty((size_t)(M * N), std::numeric_limits<float>::quiet_NaN());
  moas::packed_product(M, A.data(), K, packed, 0.0f, clean.data(), N);
  moas::packed_product(M, A.data(), K, packed, 0.0f, dirty.data(), N);
  REQUIRE(clean == dirty);
}

TEST_CASE("a packed product's row does not depend on the other rows, the row count or the threads",
          "[ops][gemm][determinism]") {
  // W of 1152 x 384 floats (1.7 MB, a fused q/k/v weight): large enough to be split between threads.
  const int64_t N = 1152, K = 384, M = moas::kSkinnyRows;
  const std::vector<float> A = random_floats((size_t)(M * K), 6), W = random_floats((size_t)(N * K), 7);
  const moas::PackedMatrix<float> packed = moas::pack_matrix(W.data(), N, K, K);
  const int saved = omp_get_max_threads();
  std::vector<float> all((size_t)(M * N)), threaded((size_t)(M * N));
  omp_set_num_threads(1);
  moas::packed_product(M, A.data(), K, packed, 0.0f, all.data(), N);
  omp_set_num_threads(2);
  moas::packed_product(M, A.data(), K, packed, 0.0f, threaded.data(), N);
  REQUIRE(all == threaded);
  for (int64_t first = 0; first < M; ++first)
    for (int64_t rows = 1; first + rows <= M; ++rows) {
      std::vector<float> some((size_t)(rows * N));
      moas::packed_product(rows, A.data() + first * K, K, packed, 0.0f, some.data(), N);
      INFO("rows " << first << " to " << first + rows);
      REQUIRE(std::equal(some.begin(), some.end(), all.begin() + first * N));
    }
  omp_set_num_threads(saved);
}
