// Row-major GEMM through cuBLAS, which is column-major: a row-major matrix read column-major is its transpose, so
// row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, cublasSgemm with the operands swapped (B first)
// and the sizes (N, M, K). Each thread has its own cuBLAS handle per device: a handle belongs to the device current
// when it was made, and the stream every call sets on it would race between threads sharing it. The precision is
// per thread too: full fp32 through cublasSgemm, or cublasGemmEx with fp32 matrices and a compute type that lets
// tensor cores round the inputs (TF32, or bfloat16/TF32) and accumulate in fp32 — fp32 weights, no copies.
#include <cublas_v2.h>

#include <climits>
#include <string>
#include <vector>

#include "check.cuh"
#include "elementwise.cuh"
#include "gemm.cuh"
#include "moas.h"

namespace moas {
namespace cuda {
namespace {

class ThreadHandles {
 public:
  ThreadHandles() = default;
  ThreadHandles(const ThreadHandles &) = delete;
  ThreadHandles &operator=(const ThreadHandles &) = delete;
  ~ThreadHandles() {
    for (cublasHandle_t h : by_device_)
      if (h) cublasDestroy(h);
  }

  // The calling thread's handle for its current device, made on first use; nullptr after fail().
  cublasHandle_t current() {
    int device = 0;
    if (checked(cudaGetDevice(&device), "gemm: cudaGetDevice") != kOk) return nullptr;
    if ((size_t)device >= by_device_.size()) by_device_.resize((size_t)device + 1, nullptr);
    cublasHandle_t &h = by_device_[(size_t)device];
    if (h) return h;
    cublasStatus_t s = cublasCreate(&h);
    // DEFAULT_MATH keeps every fp32 product in fp32: TF32 tensor cores (CUBLAS_TF32_TENSOR_OP_MATH) would round the
    // inputs to 10-bit mantissas, far outside the CPU backend's tolerance.
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    if (s == CUBLAS_STATUS_SUCCESS) return h;
    fail(std::string("gemm: creating the cuBLAS handle: ") + cublasGetStatusString(s));
    if (h) cublasDestroy(h);
    h = nullptr;
    return nullptr;
  }

 private:
  std::vector<cublasHandle_t> by_device_;
};

thread_local ThreadHandles handles;
thread_local int32_t precision = MOAS_MATMUL_FP32;

int32_t check_leading(const char *name, int64_t ld, int64_t least) {
  if (ld >= (least > 1 ? least : 1)) return kOk;
  return fail(std::string("gemm: ") + name + " is " + std::to_string(ld) + ", below its row length " +
              std::to_string(least));
}

// Row-major C = op(A) op(B) as the column-major C^T = op(B)^T op(A)^T, in the thread's precision.
cublasStatus_t column_major_product(cublasHandle_t h, int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K,
                                    float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                                    float *C, int64_t ldc) {
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (precision == MOAS_MATMUL_FP32)
    return cublasSgemm(h, op_b, op_a, (int)N, (int)M, (int)K, &alpha, B, (int)ldb, A, (int)lda, &beta, C, (int)ldc);
  const cublasComputeType_t compute =
      precision == MOAS_MATMUL_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F_FAST_16BF;
  return cublasGemmEx(h, op_b, op_a, (int)N, (int)M, (int)K, &alpha, B, CUDA_R_32F, (int)ldb, A, CUDA_R_32F, (int)lda,
                      &beta, C, CUDA_R_32F, (int)ldc, compute, CUBLAS_GEMM_DEFAULT);
}

}  // namespace

int32_t gemm(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
             int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc, void *stream) {
  if (M < 0 || N < 0 || K < 0) return fail("gemm: M, N and K must be >= 0");
  // As src/base/gemm.cpp's handled_empty: cuBLAS never sees a zero size; with K = 0 the product is beta C.
  if (M == 0 || N == 0) return kOk;
  if (!C) return fail("gemm: a null argument");
  if (check_leading("ldc", ldc, N) != kOk) return kFailed;
  if (K == 0) return beta == 1.0f ? kOk : scale_rows(C, ldc, beta, M, N, stream);
  if (!A || !B) return fail("gemm: a null argument");
  if (check_leading("lda", lda, trans_a ? M : K) != kOk || check_leading("ldb", ldb, trans_b ? K : N) != kOk)
    return kFailed;
  for (const int64_t v : {M, N, K, lda, ldb, ldc})
    if (v > INT_MAX)
      return fail("gemm: a size or leading dimension of " + std::to_string(v) + " exceeds cuBLAS's int (" +
                  std::to_string(INT_MAX) + ")");

  const cublasHandle_t h = handles.current();
  if (!h) return kFailed;
  cublasStatus_t s = cublasSetStream(h, (cudaStream_t)stream);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = column_major_product(h, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  return s == CUBLAS_STATUS_SUCCESS ? kOk : fail(std::string("gemm: cuBLAS: ") + cublasGetStatusString(s));
}

int32_t matmul_precision() { return precision; }

int32_t set_matmul_precision(int32_t p) {
  if (p != MOAS_MATMUL_FP32 && p != MOAS_MATMUL_TF32 && p != MOAS_MATMUL_BF16)
    return fail("set_matmul_precision: " + std::to_string(p) + " is not a MOAS_MATMUL_* value");
  precision = p;
  return kOk;
}

}  // namespace cuda
}  // namespace moas
