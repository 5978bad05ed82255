// Matrix products on the GPU (the CUDA twin of src/base/gemm.hpp): row-major GEMM through cuBLAS, in full fp32 unless the
// calling thread asked for TF32 or BF16 tensor cores.
#pragma once

#include <cstdint>

namespace moas {
namespace cuda {

// The table's gemm: row-major C [M, N] = alpha op(A) op(B) + beta C (trans_*: 1 = transposed), on `stream`.
int32_t gemm(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
             int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc, void *stream);
// The table's set_matmul_precision: MOAS_MATMUL_* for the calling thread's later gemm calls (and attention's, which
// runs on tensor cores in BF16 mode), and what it was last set to.
int32_t set_matmul_precision(int32_t precision);
int32_t matmul_precision();

}  // namespace cuda
}  // namespace moas
