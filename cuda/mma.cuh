// Tensor-core products of tiles in shared memory, for the block functions of attention_tc.cuh: bfloat16 inputs,
// fp32 accumulation. On the device each warp of the block takes 16 x 16 output tiles and runs WMMA on them; on the
// host (the tests) the same tiles are computed by a loop that rounds exactly as the inputs were stored and sums in
// fp32, so the tests check every index map, transpose, stride and tile bound that the device code uses. Only the
// WMMA calls themselves (a documented warp-level API) are device-only.
#pragma once

#include <cstdint>
#include <type_traits>

#include "base/fast_math.hpp"
#include "block.cuh"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <mma.h>
#endif

namespace moas {
namespace cuda {

// bfloat16 as its bits, the same type on both sides (the host has no __nv_bfloat16).
using bf16_bits = uint16_t;

// x rounded to the nearest bfloat16, ties to even (as __float2bfloat16_rn), NaN kept a NaN. Integer arithmetic only,
// so host and device round identically.
MOAS_HD inline bf16_bits to_bf16(float x) {
  uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_bits)((u >> 16) | 0x40u);  // NaN: quiet, never rounded to inf
  u += 0x7fffu + ((u >> 16) & 1u);
  return (bf16_bits)(u >> 16);
}

MOAS_HD inline float from_bf16(bf16_bits b) { return float_from_bits((uint32_t)b << 16); }

constexpr int kMmaTile = 16;      // WMMA's m16n16k16 for bfloat16
constexpr size_t kMmaAlign = 32;  // WMMA loads and stores need 256-bit aligned tile pointers

MOAS_HD inline int64_t round_up_16(int64_t n) { return (n + kMmaTile - 1) / kMmaTile * kMmaTile; }

// Element (i, k) of op(A) and (k, j) of op(B): A is [M, K] row-major, or with kTransA stored [K, M] (op(A) = the
// transpose of what is stored); B is [K, N] row-major, or with kTransB stored [N, K].
template <bool kTransA>
MOAS_HD inline const bf16_bits *a_at(const bf16_bits *A, int64_t lda, int64_t i, int64_t k) {
  return kTransA ? A + k * lda + i : A + i * lda + k;
}
template <bool kTransB>
MOAS_HD inline const bf16_bits *b_at(const bf16_bits *B, int64_t ldb, int64_t k, int64_t j) {
  return kTransB ? B + j * ldb + k : B + k * ldb + j;
}

// C [M, N] (fp32, row-major, ldc) = (accumulate ? C : 0) + op(A) op(B), one phase of the block. M, N and K are
// multiples of 16; every A, B and C pointer a 16 x 16 tile starts at must be 32-byte aligned (the arena's alignment
// with leading dimensions that are multiples of 8 elements for bf16 and 4 for float, and tile rows multiples of 16).
template <bool kTransA, bool kTransB, class Block>
MOAS_HD void block_mma(const Block &block, int64_t M, int64_t N, int64_t K, const bf16_bits *A, int64_t lda,
                       const bf16_bits *B, int64_t ldb, float *C, int64_t ldc, bool accumulate) {
  static_assert(Block::kThreads % 32 == 0, "whole warps");
  constexpr int kWarps = Block::kThreads / 32;
  const int64_t tiles_n = N / kMmaTile, tiles = (M / kMmaTile) * tiles_n;
  block.each([&](int t) {
    const int warp = t / 32;
#if defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ >= 800
    namespace wmma = nvcuda::wmma;
    using LayoutA = typename std::conditional<kTransA, wmma::col_major, wmma::row_major>::type;
    using LayoutB = typename std::conditional<kTransB, wmma::col_major, wmma::row_major>::type;
    for (int64_t tile = warp; tile < tiles; tile += kWarps) {
      const int64_t i0 = tile / tiles_n * kMmaTile, j0 = tile % tiles_n * kMmaTile;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
      if (accumulate)
        wmma::load_matrix_sync(c, C + i0 * ldc + j0, (unsigned)ldc, wmma::mem_row_major);
      else
        wmma::fill_fragment(c, 0.0f);
      for (int64_t k0 = 0; k0 < K; k0 += kMmaTile) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LayoutA> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LayoutB> b;
        wmma::load_matrix_sync(a, reinterpret_cast<const __nv_bfloat16 *>(a_at<kTransA>(A, lda, i0, k0)),
                               (unsigned)lda);
        wmma::load_matrix_sync(b, reinterpret_cast<const __nv_bfloat16 *>(b_at<kTransB>(B, ldb, k0, j0)),
                               (unsigned)ldb);
        wmma::mma_sync(c, a, b, c);
      }
      wmma::store_matrix_sync(C + i0 * ldc + j0, c, (unsigned)ldc, wmma::mem_row_major);
    }
#else
    (void)warp;
    __trap();  // the launchers run these kernels only on devices of compute capability 8.0 and newer
#endif
#else
    if (t % 32 != 0) return;  // the warp's first lane stands for the warp
    for (int64_t tile = warp; tile < tiles; tile += kWarps) {
      const int64_t i0 = tile / tiles_n * kMmaTile, j0 = tile % tiles_n * kMmaTile;
      for (int64_t i = i0; i < i0 + kMmaTile; ++i)
        for (int64_t j = j0; j < j0 + kMmaTile; ++j) {
          float sum = accumulate ? C[i * ldc + j] : 0.0f;
          for (int64_t k = 0; k < K; ++k)
            sum += from_bf16(*a_at<kTransA>(A, lda, i, k)) * from_bf16(*b_at<kTransB>(B, ldb, k, j));
          C[i * ldc + j] = sum;
        }
    }
#endif
  });
}

}  // namespace cuda
}  // namespace moas
