// C[M, N] = A[M, K] W[N, K]^T + beta C for a few rows of A (a decode step's tokens), with W re-laid once into panels:
// kPanelRows rows of W at a time, stored k by k, so that a product reads W as one sequential stream and each load of
// it serves every row of A (the rows of A are broadcast one scalar at a time). Against the row layout
// (skinny_product.hpp, which must reduce each dot product across its vector lanes and reload A for every row of W)
// this reads W 2-2.5x faster at eight rows of A and as fast at one.
// Every element is one dot product summed k = 0, 1, ... K-1 in order, whatever M, the thread count or the panel it
// is in: a sequence's decode step gives the same bits alone or in a batch.
#pragma once

#include <cstdint>
#include <vector>

namespace moas {

template <typename T>
struct PackedMatrix {
  static constexpr int64_t kPanelRows = 32;
  int64_t rows = 0, cols = 0;  // W's N and K
  std::vector<T> panels;       // panel p, column k, lane j = W[p * kPanelRows + j][k]; rows past N are zeros

  int64_t panel_count() const { return (rows + kPanelRows - 1) / kPanelRows; }
};

// Re-lays W [N, K] (row stride ldw).
template <typename T>
PackedMatrix<T> pack_matrix(const T *W, int64_t N, int64_t K, int64_t ldw);

// M <= kSkinnyRows (skinny_product.hpp).
template <typename T>
void packed_product(int64_t M, const T *A, int64_t lda, const PackedMatrix<T> &W, T beta, T *C, int64_t ldc);

}  // namespace moas
