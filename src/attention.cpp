#include "attention.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "error.hpp"
#include "fast_math.hpp"
#include "gemm.hpp"

namespace moas {
namespace {

// Queries and keys share one tile size, so the causal diagonal always falls inside the tile pair (qt, qt) and
// every other visited tile is fully unmasked.
constexpr int64_t kTile = 64;

template <typename T>
void check_shape(const AttentionShape &s, const AttentionIO<T> &in) {
  require(s.batch >= 0 && s.seq >= 0 && s.heads > 0 && s.kv_heads > 0 && s.head_dim > 0,
          MOAS_ERR_INVALID_CONFIG, "attention: batch/seq must be >= 0 and heads/kv_heads/head_dim > 0");
  require(s.heads % s.kv_heads == 0, MOAS_ERR_INVALID_CONFIG,
          "attention: heads (" + std::to_string(s.heads) + ") must be a multiple of kv_heads (" +
              std::to_string(s.kv_heads) + ")");
  require(in.q_stride >= s.heads * s.head_dim && in.k_stride >= s.kv_heads * s.head_dim &&
              in.v_stride >= s.kv_heads * s.head_dim,
          MOAS_ERR_SIZE_MISMATCH, "attention: a q/k/v row stride is shorter than its heads");
}

// Below about a million multiply-adds, waking a thread team costs more than the work (decode steps, tests).
bool worth_threads(const AttentionShape &s) {
  return s.batch * s.heads * s.seq * s.seq * s.head_dim >= (int64_t(1) << 20);
}

}  // namespace

template <typename T>
void attention_forward(const AttentionShape &s, const AttentionIO<T> &in, T *out, int64_t out_stride, T *lse,
                       const Dropout &dropout) {
  check_shape(s, in);
  require(out_stride >= s.heads * s.head_dim, MOAS_ERR_SIZE_MISMATCH, "attention: out row stride too short");
  const int64_t B = s.batch, n = s.seq, H = s.heads, d = s.head_dim, group = H / s.kv_heads;
  const int64_t ntiles = (n + kTile - 1) / kTile, bh_count = B * H, ntasks = bh_count * ntiles;
  const T scale = T(1) / std::sqrt(T(d));
  const bool drop = dropout.active();
  const T keep_scale = drop ? T(1) / (T(1) - T(dropout.p)) : T(1);

#pragma omp parallel if (worth_threads(s))
  {
    std::vector<T> S(kTile * kTile), acc(kTile * d), m(kTile), l(kTile);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < ntasks; ++task) {
      // Later query tiles visit more key tiles, so they are handed out first to balance the threads.
      const int64_t qt = ntiles - 1 - task / bh_count, bh = task % bh_count;
      const int64_t b = bh / H, h = bh % H, g = h / group;
      const int64_t i0 = qt * kTile, mq = std::min(kTile, n - i0);
      const T *Q = in.q + (b * n + i0) * in.q_stride + h * d;
      std::fill(m.begin(), m.end(), -std::numeric_limits<T>::infinity());
      std::fill(l.begin(), l.end(), T(0));
      std::fill(acc.begin(), acc.end(), T(0));

      for (int64_t kt = 0; kt <= qt; ++kt) {
        const bool diag = kt == qt;
        const int64_t j0 = kt * kTile, nk = diag ? mq : kTile;
        const T *K = in.k + (b * n + j0) * in.k_stride + g * d;
        const T *V = in.v + (b * n + j0) * in.v_stride + g * d;
        gemm(Trans::No, Trans::Yes, mq, nk, d, scale, Q, in.q_stride, K, in.k_stride, T(0), S.data(), kTile);

        for (int64_t r = 0; r < mq; ++r) {
          T *Sr = S.data() + r * kTile;
          const int64_t valid = diag ? r + 1 : nk;  // keys j <= i
          T mx = m[r];
#pragma omp simd reduction(max : mx)
          for (int64_t c = 0; c < valid; ++c) mx = std::max(mx, Sr[c]);
          const T alpha = fast_exp(m[r] - mx);  // rescales the running sums; ~0 on the first tile (m = -inf)
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t c = 0; c < nk; ++c) {
            const T p = c < valid ? fast_exp(Sr[c] - mx) : T(0);
            Sr[c] = p;
            sum += p;
          }
          l[r] = l[r] * alpha + sum;  // the normaliser takes the undropped probabilities
          m[r] = mx;
          if (alpha != T(1)) {
            T *ar = acc.data() + r * d;
#pragma omp simd
            for (int64_t c = 0; c < d; ++c) ar[c] *= alpha;
          }
          if (drop) {
            const uint64_t e0 = (uint64_t)(((b * H + h) * n + i0 + r) * n + j0);
            for (int64_t c = 0; c < valid; ++c) Sr[c] = dropout.keep(e0 + (uint64_t)c) ? Sr[c] * keep_scale : T(0);
          }
        }
        gemm(Trans::No, Trans::No, mq, d, nk, T(1), S.data(), kTile, V, in.v_stride, T(1), acc.data(), d);
      }

      for (int64_t r = 0; r < mq; ++r) {
        const T inv = T(1) / l[r];
        const T *ar = acc.data() + r * d;
        T *orow = out + (b * n + i0 + r) * out_stride + h * d;
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) orow[c] = ar[c] * inv;
        lse[(b * H + h) * n + i0 + r] = m[r] + std::log(l[r]);
      }
    }
  }
}

// FlashAttention-2 style: P is recomputed from lse, and with D_i = rowsum(dO_i * O_i)
//   dV_j += (P o Z)^T dO,  dP = (dO V_j^T) o Z,  dS = P o (dP - D),  dK_j += scale dS^T Q,  dQ += scale dS K_j
// where Z = mask / (1 - p) (all ones without dropout). One task per (batch, kv head) owns dk/dv of that kv head
// and dq of its query heads, so every sum runs in a fixed order without atomics.
template <typename T>
void attention_backward(const AttentionShape &s, const AttentionIO<T> &in, const T *out, int64_t out_stride,
                        const T *lse, const T *dout, T *dq, int64_t dq_stride, T *dk, int64_t dk_stride, T *dv,
                        int64_t dv_stride, const Dropout &dropout) {
  check_shape(s, in);
  require(out_stride >= s.heads * s.head_dim && dq_stride >= s.heads * s.head_dim &&
              dk_stride >= s.kv_heads * s.head_dim && dv_stride >= s.kv_heads * s.head_dim,
          MOAS_ERR_SIZE_MISMATCH, "attention backward: an out/dq/dk/dv row stride is shorter than its heads");
  const int64_t B = s.batch, n = s.seq, H = s.heads, Hkv = s.kv_heads, d = s.head_dim, group = H / Hkv;
  const int64_t ntiles = (n + kTile - 1) / kTile, ntasks = B * Hkv;
  const T scale = T(1) / std::sqrt(T(d));
  const bool drop = dropout.active();
  const T keep_scale = drop ? T(1) / (T(1) - T(dropout.p)) : T(1);

#pragma omp parallel if (worth_threads(s))
  {
    std::vector<T> P(kTile * kTile), dS(kTile * kTile), Pd(drop ? kTile * kTile : 0), D(group * n);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t b = task / Hkv, g = task % Hkv, h0 = g * group;  // query heads h0 .. h0 + group - 1

      for (int64_t t = 0; t < n; ++t) {
        const int64_t row = b * n + t;
        std::fill_n(dk + row * dk_stride + g * d, d, T(0));
        std::fill_n(dv + row * dv_stride + g * d, d, T(0));
        std::fill_n(dq + row * dq_stride + h0 * d, group * d, T(0));  // the group's heads are adjacent columns
        for (int64_t hh = 0; hh < group; ++hh) {
          const T *o = out + row * out_stride + (h0 + hh) * d;
          const T *go = dout + row * out_stride + (h0 + hh) * d;
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t c = 0; c < d; ++c) sum += o[c] * go[c];
          D[hh * n + t] = sum;
        }
      }

      // kv tile outermost so K_j, V_j and their gradient rows stay in cache across the whole query group.
      for (int64_t kt = 0; kt < ntiles; ++kt) {
        const int64_t j0 = kt * kTile, nk = std::min(kTile, n - j0);
        const T *K = in.k + (b * n + j0) * in.k_stride + g * d;
        const T *V = in.v + (b * n + j0) * in.v_stride + g * d;
        T *dK = dk + (b * n + j0) * dk_stride + g * d;
        T *dV = dv + (b * n + j0) * dv_stride + g * d;
        for (int64_t hh = 0; hh < group; ++hh) {
          const int64_t h = h0 + hh;
          for (int64_t qt = kt; qt < ntiles; ++qt) {
            const bool diag = qt == kt;
            const int64_t i0 = qt * kTile, mq = std::min(kTile, n - i0);
            const T *Q = in.q + (b * n + i0) * in.q_stride + h * d;
            const T *dO = dout + (b * n + i0) * out_stride + h * d;
            T *dQ = dq + (b * n + i0) * dq_stride + h * d;
            gemm(Trans::No, Trans::Yes, mq, nk, d, scale, Q, in.q_stride, K, in.k_stride, T(0), P.data(), kTile);
            gemm(Trans::No, Trans::Yes, mq, nk, d, T(1), dO, out_stride, V, in.v_stride, T(0), dS.data(), kTile);

            for (int64_t r = 0; r < mq; ++r) {
              T *Pr = P.data() + r * kTile, *dSr = dS.data() + r * kTile;
              const int64_t valid = diag ? r + 1 : nk;
              const T li = lse[(b * H + h) * n + i0 + r], Di = D[hh * n + i0 + r];
              if (drop) {
                T *Pdr = Pd.data() + r * kTile;
                const uint64_t e0 = (uint64_t)(((b * H + h) * n + i0 + r) * n + j0);
                for (int64_t c = 0; c < nk; ++c) {
                  const T p = c < valid ? fast_exp(Pr[c] - li) : T(0);
                  const T z = c < valid && dropout.keep(e0 + (uint64_t)c) ? keep_scale : T(0);
                  Pdr[c] = p * z;
                  dSr[c] = p * (dSr[c] * z - Di);
                }
              } else {
#pragma omp simd
                for (int64_t c = 0; c < nk; ++c) {
                  const T p = c < valid ? fast_exp(Pr[c] - li) : T(0);
                  Pr[c] = p;
                  dSr[c] = p * (dSr[c] - Di);
                }
              }
            }
            const T *Pused = drop ? Pd.data() : P.data();
            gemm(Trans::Yes, Trans::No, nk, d, mq, T(1), Pused, kTile, dO, out_stride, T(1), dV, dv_stride);
            gemm(Trans::Yes, Trans::No, nk, d, mq, scale, dS.data(), kTile, Q, in.q_stride, T(1), dK, dk_stride);
            gemm(Trans::No, Trans::No, mq, d, nk, scale, dS.data(), kTile, K, in.k_stride, T(1), dQ, dq_stride);
          }
        }
      }
    }
  }
}

template void attention_forward<float>(const AttentionShape &, const AttentionIO<float> &, float *, int64_t,
                                       float *, const Dropout &);
template void attention_forward<double>(const AttentionShape &, const AttentionIO<double> &, double *, int64_t,
                                        double *, const Dropout &);
template void attention_backward<float>(const AttentionShape &, const AttentionIO<float> &, const float *, int64_t,
                                        const float *, const float *, float *, int64_t, float *, int64_t, float *,
                                        int64_t, const Dropout &);
template void attention_backward<double>(const AttentionShape &, const AttentionIO<double> &, const double *,
                                         int64_t, const double *, const double *, double *, int64_t, double *,
                                         int64_t, double *, int64_t, const Dropout &);

}  // namespace moas
