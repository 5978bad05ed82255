// Projections of a chosen set of heads, for tokens that share that set (a MoH routing group): the query projection
// q = x W_q[heads]^T and the heads' slice of the output projection y = o W_proj[:, heads]^T, with their backward.
// One object per thread: it keeps gathered weights as scratch.
// W_q has H row blocks of head_dim rows; W_proj has H column blocks. A group's heads are any K of them, not
// contiguous, so the product either gathers their weight blocks into one contiguous matrix and runs one wide GEMM
// (worth it for a large group: the gather costs K d C, the same as d tokens' rows), or runs one thin GEMM per head
// on the weight blocks in place (small groups, decoding).
#pragma once

#include <cstdint>
#include <vector>

#include "base/gemm.hpp"
#include "base/parallel.hpp"
#include "ops/linear.hpp"

namespace moas {

// Tokens per group from which gathering the heads' weights pays for itself.
constexpr int64_t kWideGroup = 64;

template <typename T>
class HeadProjection {
 public:
  HeadProjection(int64_t width, int64_t head_dim) : C_(width), d_(head_dim) {}

  // q [m, K d] = x [m, C] W_q[heads]^T (+ b_q[heads]); bias may be null.
  void queries(T *q, const T *x, int64_t m, const std::vector<int64_t> &heads, const T *w_q, const T *bias) {
    const int64_t K = (int64_t)heads.size(), Kd = K * d_;
    if (m >= kWideGroup) {
      gather_query_weights(heads, w_q, bias);
      linear_forward(q, Kd, x, w_.data(), bias ? b_.data() : nullptr, m, C_, Kd);
      return;
    }
    for (int64_t s = 0; s < K; s++)
      linear_forward(q + s * d_, Kd, x, w_q + heads[(size_t)s] * d_ * C_, bias ? bias + heads[(size_t)s] * d_ : nullptr,
                     m, C_, d_);
  }

  // dx [m, C] = dq W_q[heads]; dw [K d, C] = dq^T x; db [K d] = colsum(dq) (db may be null). All overwritten: the
  // caller adds dw and db into the heads' rows of the full gradients (in a fixed order, so sums are deterministic).
  void queries_backward(T *dx, T *dw, T *db, const T *dq, const T *x, int64_t m, const std::vector<int64_t> &heads,
                        const T *w_q) {
    const int64_t K = (int64_t)heads.size(), Kd = K * d_;
    if (db) std::fill_n(db, Kd, T(0));
    if (m >= kWideGroup) {
      gather_query_weights(heads, w_q, nullptr);
      gemm(Trans::No, Trans::No, m, C_, Kd, T(1), dq, Kd, w_.data(), C_, T(0), dx, C_);
      gemm(Trans::Yes, Trans::No, Kd, C_, m, T(1), dq, Kd, x, C_, T(0), dw, C_);
      if (db) column_sum_accumulate(db, dq, m, Kd);
      return;
    }
    for (int64_t s = 0; s < K; s++) {
      const int64_t h = heads[(size_t)s];
      gemm(Trans::No, Trans::No, m, C_, d_, T(1), dq + s * d_, Kd, w_q + h * d_ * C_, C_, s ? T(1) : T(0), dx, C_);
      gemm(Trans::Yes, Trans::No, d_, C_, m, T(1), dq + s * d_, Kd, x, C_, T(0), dw + s * d_ * C_, C_);
    }
    if (db)
      for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < Kd; c++) db[c] += dq[r * Kd + c];
  }

  // y [m, C] = o [m, K d] W_proj[:, heads]^T (overwritten).
  void outputs(T *y, const T *o, int64_t m, const std::vector<int64_t> &heads, const T *w_proj) {
    const int64_t K = (int64_t)heads.size(), Kd = K * d_;
    if (m >= kWideGroup) {
      gather_output_weights(heads, w_proj);
      gemm(Trans::No, Trans::Yes, m, C_, Kd, T(1), o, Kd, w_.data(), Kd, T(0), y, C_);
      return;
    }
    for (int64_t s = 0; s < K; s++)
      gemm(Trans::No, Trans::Yes, m, C_, d_, T(1), o + s * d_, Kd, w_proj + heads[(size_t)s] * d_, C_,
           s ? T(1) : T(0), y, C_);
  }

  // d_o [m, K d] = dy W_proj[:, heads]; dw [C, K d] = dy^T o. Both overwritten; the caller adds dw into the heads'
  // columns of the full gradient.
  void outputs_backward(T *d_o, T *dw, const T *dy, const T *o, int64_t m, const std::vector<int64_t> &heads,
                        const T *w_proj) {
    const int64_t K = (int64_t)heads.size(), Kd = K * d_;
    gemm(Trans::Yes, Trans::No, C_, Kd, m, T(1), dy, C_, o, Kd, T(0), dw, Kd);
    if (m >= kWideGroup) {
      gather_output_weights(heads, w_proj);
      gemm(Trans::No, Trans::No, m, Kd, C_, T(1), dy, C_, w_.data(), Kd, T(0), d_o, Kd);
      return;
    }
    for (int64_t s = 0; s < K; s++)
      gemm(Trans::No, Trans::No, m, d_, C_, T(1), dy, C_, w_proj + heads[(size_t)s] * d_, C_, T(0), d_o + s * d_, Kd);
  }

 private:
  void gather_query_weights(const std::vector<int64_t> &heads, const T *w_q, const T *bias) {
    const int64_t K = (int64_t)heads.size();
    w_.resize((size_t)(K * d_ * C_));
    b_.resize((size_t)(K * d_));
    for (int64_t s = 0; s < K; s++) {
      std::copy_n(w_q + heads[(size_t)s] * d_ * C_, d_ * C_, w_.data() + s * d_ * C_);
      if (bias) std::copy_n(bias + heads[(size_t)s] * d_, d_, b_.data() + s * d_);
    }
  }
  void gather_output_weights(const std::vector<int64_t> &heads, const T *w_proj) {
    const int64_t K = (int64_t)heads.size(), Kd = K * d_;
    w_.resize((size_t)(C_ * Kd));
    for (int64_t c = 0; c < C_; c++)
      for (int64_t s = 0; s < K; s++)
        std::copy_n(w_proj + c * C_ + heads[(size_t)s] * d_, d_, w_.data() + c * Kd + s * d_);
  }

  int64_t C_, d_;
  std::vector<T> w_, b_;  // gathered weights
};

}  // namespace moas
