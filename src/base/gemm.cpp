#include "base/gemm.hpp"

#include <cblas.h>

#include <string>

#include "base/error.hpp"
#include "base/parallel.hpp"
#include "base/skinny_product.hpp"

#ifdef MOAS_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

namespace moas {

namespace {
CBLAS_TRANSPOSE cblas_trans(Trans t) { return t == Trans::Yes ? CblasTrans : CblasNoTrans; }

// Routed attention produces empty products (a branch or head no token chose). BLAS libraries disagree on whether
// zero sizes are legal, so they never reach one: with K = 0 the product is beta * C.
template <typename T>
bool handled_empty(int64_t M, int64_t N, int64_t K, T beta, T *C, int64_t ldc) {
  if (M > 0 && N > 0 && K > 0) return false;
  if (K == 0 && beta != T(1))
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
  return true;
}

// A product smaller than this (multiply-adds) runs on the calling thread, through OpenBLAS. Measured on these machines:
// at RustGPT's sizes (T = 8..80 rows, C = 128) a second thread saves a few microseconds at best and, for a thin inner
// dimension (a weight gradient over 25 tokens), costs 15x; every team a small call wakes spins afterwards against
// whatever else runs on the cores; and oneDNN's sgemm allocates its packing buffer on every call (up to 192 KB, a
// fresh mapping, at T = 80), where OpenBLAS allocates nothing and a whole RustGPT call runs as fast.
constexpr int64_t kSerialProductMacs = int64_t(1) << 22;
}  // namespace

void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
          const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (handled_empty(M, N, K, beta, C, ldc)) return;
  if (ta == Trans::No && tb == Trans::Yes && M <= kSkinnyRows) {
    skinny_product_nt(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const bool small = M * N * K < kSerialProductMacs;
  SerialScope serial(small);
#ifdef MOAS_HAVE_DNNL
  if (!small) {
    const dnnl_status_t status = dnnl_sgemm(ta == Trans::Yes ? 'T' : 'N', tb == Trans::Yes ? 'T' : 'N', M, N, K,
                                            alpha, A, lda, B, ldb, beta, C, ldc);
    MOAS_REQUIRE(status == dnnl_success, MOAS_ERR_INTERNAL,
                 "oneDNN sgemm failed with status " + std::to_string(status));
    return;
  }
#endif
  cblas_sgemm(CblasRowMajor, cblas_trans(ta), cblas_trans(tb), (blasint)M, (blasint)N, (blasint)K, alpha, A,
              (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, double alpha, const double *A, int64_t lda,
          const double *B, int64_t ldb, double beta, double *C, int64_t ldc) {
  if (handled_empty(M, N, K, beta, C, ldc)) return;
  if (ta == Trans::No && tb == Trans::Yes && M <= kSkinnyRows) {
    skinny_product_nt(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  SerialScope serial(M * N * K < kSerialProductMacs);
  cblas_dgemm(CblasRowMajor, cblas_trans(ta), cblas_trans(tb), (blasint)M, (blasint)N, (blasint)K, alpha, A,
              (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

const char *gemm_backend_name() {
#ifdef MOAS_HAVE_DNNL
  return "oneDNN";
#else
  return "OpenBLAS";
#endif
}

}  // namespace moas
