// Row-major GEMM: C[M,N] = alpha * op(A) op(B) + beta * C, with op(X) = X or X^T.
// A B^T with at most kSkinnyRows rows of A (decoding, small routed groups) runs skinny_product.hpp's kernel, which
// reads B once. Otherwise float goes to oneDNN's sgemm where the build found it (AVX-512 JIT kernels: about twice
// Debian OpenBLAS's Haswell-kernel rate on these machines), else to CBLAS; products under 4M multiply-adds run on the
// calling thread through CBLAS (gemm.cpp says why); double (the finite-difference build) always to CBLAS.
#pragma once

#include <cstdint>

namespace moas {

enum class Trans { No, Yes };

void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
          const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, double alpha, const double *A, int64_t lda,
          const double *B, int64_t ldb, double beta, double *C, int64_t ldc);

// Which library serves float GEMMs ("oneDNN" or "OpenBLAS"), for benchmark reports.
const char *gemm_backend_name();

}  // namespace moas
