// The few-row product C = alpha A B^T + beta C (src/base/skinny_product.cpp, which gemm() takes for up to kSkinnyRows
// rows of A) against a float64 loop, over every row count it serves, widths around its 16-lane blocks and strides
// wider than the rows; and its promises: beta = 0 never reads C, each element is the same bits whatever the other
// rows, the row count or the thread count.
#include <omp.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "base/gemm.hpp"
#include "base/skinny_product.hpp"
#include "random_floats.hpp"

using ops_test::random_floats;

TEST_CASE("the skinny product matches a float64 loop", "[ops][gemm]") {
  for (int64_t M = 1; M <= moas::kSkinnyRows; ++M)
    for (int64_t K : {1, 15, 16, 17, 64, 100})
      for (int64_t N : {1, 3, 8, 13}) {
        const int64_t lda = K + 3, ldb = K + 5, ldc = N + 2;
        const std::vector<float> A = random_floats((size_t)(M * lda), 1), B = random_floats((size_t)(N * ldb), 2);
        const std::vector<float> C0 = random_floats((size_t)(M * ldc), 3);
        for (float beta : {0.0f, 1.0f, -0.5f}) {
          std::vector<float> C = C0;
          moas::gemm(moas::Trans::No, moas::Trans::Yes, M, N, K, 0.75f, A.data(), lda, B.data(), ldb, beta, C.data(),
                     ldc);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < ldc; ++n) {
              const size_t at = (size_t)(m * ldc + n);
              if (n >= N) {
                REQUIRE(C[at] == C0[at]);  // past the N columns: untouched
                continue;
              }
              double dot = 0;
              for (int64_t k = 0; k < K; ++k) dot += (double)A[(size_t)(m * lda + k)] * B[(size_t)(n * ldb + k)];
              const double expected = 0.75 * dot + (double)beta * C0[at];
              INFO("M " << M << " N " << N << " K " << K << " beta " << beta);
              REQUIRE(std::abs(C[at] - expected) < 1e-5 * (1.0 + std::sqrt((double)K)));
            }
        }
      }
}

TEST_CASE("the skinny product with beta 0 ignores what C held", "[ops][gemm]") {
  const int64_t M = 3, N = 5, K = 33;
  const std::vector<float> A = random_floats((size_t)(M * K), 4), B = random_floats((size_t)(N * K), 5);
  std::vector<float> clean((size_t)(M * N), 0.0f), dirty((size_t)(M * N), std::numeric_limits<float>::quiet_NaN());
  moas::skinny_product_nt<float>(M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, clean.data(), N);
  moas::skinny_product_nt<float>(M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, dirty.data(), N);
  REQUIRE(clean == dirty);
}

TEST_CASE("a skinny product's row does not depend on the other rows, the row count or the threads",
          "[ops][gemm][determinism]") {
  // B of 1152 x 384 floats (1.7 MB, a fused q/k/v weight): large enough to be split between threads.
  const int64_t N = 1152, K = 384, M = moas::kSkinnyRows;
  const std::vector<float> A = random_floats((size_t)(M * K), 6), B = random_floats((size_t)(N * K), 7);
  const int saved = omp_get_max_threads();
  std::vector<float> all((size_t)(M * N)), threaded((size_t)(M * N));
  omp_set_num_threads(1);
  moas::skinny_product_nt<float>(M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, all.data(), N);
  omp_set_num_threads(2);
  moas::skinny_product_nt<float>(M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, threaded.data(), N);
  REQUIRE(all == threaded);
  for (int64_t m = 0; m < M; ++m) {
    std::vector<float> one((size_t)N);
    moas::skinny_product_nt<float>(1, N, K, 1.0f, A.data() + m * K, K, B.data(), K, 0.0f, one.data(), N);
    REQUIRE(std::equal(one.begin(), one.end(), all.begin() + m * N));
  }
  omp_set_num_threads(saved);
}
