// C[M, N] = alpha A[M, K] B[N, K]^T + beta C for a few rows of A: decoding (one row per sequence), a MoH head's
// handful of tokens, a short query chunk against a key tile. There the product is a read of B — a weight matrix or
// a tile of keys — and a GEMM library spends its time packing B for reuse that never comes. Here each row of B is read
// once, for all M rows of A, in slices of rows split between threads when B is large enough to be worth a team.
// Every element is one dot product summed in a fixed order (kLanes partial sums, then the lanes in order, then the
// tail), whatever M, N, the row blocking or the thread count: results do not depend on the batch or on threads.
#pragma once

#include <cstdint>

namespace moas {

// The largest M the kernel serves; gemm() sends larger products to the GEMM library.
constexpr int64_t kSkinnyRows = 8;
// Bytes of the right-hand matrix from which a few-row product (this one, packed_product.hpp's) splits it between
// threads: about 20 us of one core's reads, what waking a second thread costs.
constexpr int64_t kFewRowThreadedBytes = int64_t(256) << 10;

template <typename T>
void skinny_product_nt(int64_t M, int64_t N, int64_t K, T alpha, const T *A, int64_t lda, const T *B, int64_t ldb,
                       T beta, T *C, int64_t ldc);

}  // namespace moas
