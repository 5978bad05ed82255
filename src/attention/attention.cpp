#include "attention/attention.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include "attention/attention_decode.hpp"
#include "attention/attention_math.hpp"
#include "attention/query_chunks.hpp"
#include "base/error.hpp"
#include "base/gemm.hpp"
#include "base/parallel.hpp"
#include "base/thread_scratch.hpp"

namespace moas {
namespace {

// Query chunks and key tiles share one size; a chunk holds the compact rows of one sequence in one band of `tile`
// positions (query_chunk_end). Sequences of up to 128 positions are one tile: short sequences (RustGPT's 80) then
// make one product per head and pass instead of three, whose fixed costs dominated; longer ones use 64, which keeps
// the causal waste of diagonal tiles small.
int64_t tile_for(int64_t seq) { return seq <= 128 ? 128 : 64; }

}  // namespace

template <typename T>
void check_attention_dims(const AttentionDims &s, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads) {
  MOAS_REQUIRE(s.batch >= 0 && s.seq >= 0 && s.heads > 0 && s.kv_heads > 0 && s.head_dim > 0 && s.window >= 0,
               MOAS_ERR_INVALID_CONFIG, "attention: batch/seq/window must be >= 0 and heads/kv_heads/head_dim > 0");
  MOAS_REQUIRE(s.heads % s.kv_heads == 0, MOAS_ERR_INVALID_CONFIG,
               "attention: heads (" + std::to_string(s.heads) + ") must be a multiple of kv_heads (" +
               std::to_string(s.kv_heads) + ")");
  for (const QueryHead<T> &qh : heads) {
    MOAS_REQUIRE(qh.head >= 0 && qh.head < s.heads, MOAS_ERR_INVALID_CONFIG, "attention: a query head is out of range");
    MOAS_REQUIRE(qh.rows && (int64_t)qh.rows->begin.size() == s.batch + 1, MOAS_ERR_SIZE_MISMATCH,
                 "attention: a query head's rows do not cover the batch");
    MOAS_REQUIRE(qh.q_stride >= s.head_dim && qh.out_stride >= s.head_dim, MOAS_ERR_SIZE_MISMATCH,
                 "attention: a q/out row stride is shorter than head_dim");
    // Rows are in position order, so each sequence's first row sees the earliest key and its last row the latest.
    for (int64_t b = 0; b < s.batch; ++b) {
      const int64_t rb = qh.rows->begin[(size_t)b], re = qh.rows->begin[(size_t)b + 1];
      if (re > rb)
        MOAS_REQUIRE(first_visible_key(qh.rows->pos[(size_t)rb], s.window) >= kv.first_key &&
                     qh.rows->pos[(size_t)re - 1] < kv.first_key + kv.seq_stride,
                     MOAS_ERR_SIZE_MISMATCH, "attention: a query sees keys outside those held (keys " +
                     std::to_string(kv.first_key) + " .. " +
                     std::to_string(kv.first_key + kv.seq_stride - 1) + ")");
    }
  }
}

template <typename T>
void attention_forward(const AttentionDims &s, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads,
                       const Dropout &dropout) {
  check_attention_dims(s, kv, heads);
  if (!dropout.active() && one_row_per_sequence(s, heads)) {
    attention_decode(s, kv, heads);
    return;
  }
  const int64_t H = s.heads, d = s.head_dim, group = s.heads / s.kv_heads;
  const T scale = T(1) / std::sqrt(T(d));
  const bool drop = dropout.active();
  const T keep_scale = drop ? T(1) / (T(1) - T(dropout.p)) : T(1);

  // A chunk visits the key tiles its rows' windows span.
  const int64_t kTile = tile_for(s.seq);
  int64_t total_cost;
  std::vector<QueryChunk> &chunks = kept_query_chunks();
  query_chunks(s, heads, kTile, [](int64_t rows, int64_t span) { return rows * span; }, chunks, &total_cost);
  const int64_t n_chunks = (int64_t)chunks.size();

  std::atomic<int64_t> next{0};  // a dynamic schedule: each thread takes the next task (heaviest first)
  parallel_region(worth_threads(total_cost * d), [&](int64_t, int64_t) {
    // Neither a chunk's rows nor a tile's keys outnumber the sequence's positions.
    const int64_t span = std::min(kTile, s.seq);
    T *S = thread_scratch<T, 0>((size_t)(span * span)), *acc = thread_scratch<T, 1>((size_t)(span * d));
    T *m = thread_scratch<T, 2>((size_t)span), *l = thread_scratch<T, 3>((size_t)span);
    for (int64_t task; (task = next.fetch_add(1, std::memory_order_relaxed)) < n_chunks;) {
      const QueryChunk &ch = chunks[(size_t)task];
      const QueryHead<T> &qh = heads[(size_t)ch.entry];
      const int32_t *pos = qh.rows->pos.data() + ch.r0;
      const int64_t b = ch.b, h = qh.head, g = kv_head_of(h, group), mq = ch.r1 - ch.r0, last = pos[mq - 1];
      const T *Q = qh.q + ch.r0 * qh.q_stride;
      std::fill_n(m, mq, negative_infinity<T>());
      std::fill_n(l, mq, T(0));
      std::fill_n(acc, mq * d, T(0));

      // Rows are in position order: the first row's window starts earliest.
      for (int64_t j0 = key_tile_start(first_visible_key(pos[0], s.window), kv.first_key, kTile); j0 <= last;
           j0 += kTile) {
        const int64_t nk = std::min(kTile, last + 1 - j0), key = b * kv.seq_stride + j0 - kv.first_key;
        const T *K = kv.k + key * kv.k_stride + g * d;
        const T *V = kv.v + key * kv.v_stride + g * d;
        gemm(Trans::No, Trans::Yes, mq, nk, d, scale, Q, qh.q_stride, K, kv.k_stride, T(0), S, span);
        for (int64_t r = 0; r < mq; ++r) {
          T *Sr = S + r * span;
          int64_t lo, hi;
          visible_keys(pos[r], s.window, j0, nk, &lo, &hi);
          const T alpha = online_softmax_update(Sr, lo, hi, nk, m[(size_t)r], l[(size_t)r]);
          if (alpha != T(1)) {
            T *ar = acc + r * d;
#pragma omp simd
            for (int64_t c = 0; c < d; ++c) ar[c] *= alpha;
          }
          if (drop) {
            const uint64_t e0 = (uint64_t)(((b * H + h) * s.seq + pos[r]) * s.seq + j0);
            for (int64_t c = lo; c < hi; ++c) Sr[c] = dropout.keep(e0 + (uint64_t)c) ? Sr[c] * keep_scale : T(0);
          }
        }
        gemm(Trans::No, Trans::No, mq, d, nk, T(1), S, span, V, kv.v_stride, T(1), acc, d);
      }

      for (int64_t r = 0; r < mq; ++r) {
        const T inv = T(1) / l[(size_t)r];
        const T *ar = acc + r * d;
        T *orow = qh.out + (ch.r0 + r) * qh.out_stride;
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) orow[c] = ar[c] * inv;
        qh.lse[ch.r0 + r] = m[(size_t)r] + std::log(l[(size_t)r]);
      }
    }
  });
}

// FlashAttention-2 style: P is recomputed from lse, and with D_i = rowsum(dO_i * O_i)
//   dV_j += (P o Z)^T dO,  dP = (dO V_j^T) o Z,  dS = P o (dP - D),  dK_j += scale dS^T Q,  dQ += scale dS K_j
// where Z = mask / (1 - p) (all ones without dropout). One task per (sequence, kv head) owns dk/dv of that kv head
// and dq of the listed query heads of its group, so every sum runs in a fixed order without atomics.
template <typename T>
void attention_backward(const AttentionDims &s, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads,
                        const std::vector<QueryHeadGrad<T>> &grads, const KeyValueGrads<T> &dkv,
                        const Dropout &dropout) {
  check_attention_dims(s, kv, heads);
  MOAS_REQUIRE(grads.size() == heads.size(), MOAS_ERR_SIZE_MISMATCH, "attention backward: one gradient view per head");
  MOAS_REQUIRE(kv.first_key == 0, MOAS_ERR_SIZE_MISMATCH, "attention backward: the keys must start at position 0");
  const int64_t H = s.heads, Hkv = s.kv_heads, d = s.head_dim, n = s.seq;
  const T scale = T(1) / std::sqrt(T(d));
  const bool drop = dropout.active();
  const T keep_scale = drop ? T(1) / (T(1) - T(dropout.p)) : T(1);

  const int64_t kTile = tile_for(n);
  const KvGroupTasks &plan = kv_group_tasks(s, heads);
  const std::vector<std::vector<int64_t>> &entries_of = plan.entries_of;
  const std::vector<int64_t> &tasks = plan.tasks;
  const int64_t n_tasks = (int64_t)tasks.size(), total_rows = plan.total_rows;

  std::atomic<int64_t> next{0};  // a dynamic schedule: each thread takes the next task (heaviest first)
  parallel_region(worth_threads(total_rows * n * d / std::max<int64_t>(s.batch, 1)), [&](int64_t, int64_t) {
    const int64_t span = std::min(kTile, n);  // see attention_forward
    T *P = thread_scratch<T, 0>((size_t)(span * span)), *dS = thread_scratch<T, 1>((size_t)(span * span));
    T *Pd = drop ? thread_scratch<T, 2>((size_t)(span * span)) : nullptr;
    for (int64_t task; (task = next.fetch_add(1, std::memory_order_relaxed)) < n_tasks;) {
      const int64_t b = tasks[(size_t)task] / Hkv, g = tasks[(size_t)task] % Hkv;
      const std::vector<int64_t> &entries = entries_of[(size_t)g];

      // D per listed row of this sequence, dq rows zeroed, and the keys any of them sees (from the earliest window
      // start to the furthest position).
      int64_t *d_offset = thread_scratch<int64_t, 4>(entries.size());
      int64_t n_rows = 0, first = n, last = -1;
      for (size_t k = 0; k < entries.size(); ++k) {
        const RowSet &rows = *heads[(size_t)entries[k]].rows;
        const int64_t rb = rows.begin[(size_t)b], re = rows.begin[(size_t)b + 1];
        d_offset[k] = n_rows;
        n_rows += re - rb;
        if (re > rb) {
          first = std::min(first, first_visible_key(rows.pos[(size_t)rb], s.window));
          last = std::max<int64_t>(last, rows.pos[(size_t)re - 1]);
        }
      }
      T *D = thread_scratch<T, 3>((size_t)n_rows);
      for (size_t k = 0; k < entries.size(); ++k) {
        const QueryHead<T> &qh = heads[(size_t)entries[k]];
        const QueryHeadGrad<T> &gr = grads[(size_t)entries[k]];
        for (int64_t r = qh.rows->begin[(size_t)b]; r < qh.rows->begin[(size_t)b + 1]; ++r) {
          const T *o = qh.out + r * qh.out_stride, *go = gr.dout + r * gr.dout_stride;
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t c = 0; c < d; ++c) sum += o[c] * go[c];
          D[(size_t)(d_offset[k] + r - qh.rows->begin[(size_t)b])] = sum;
          std::fill_n(gr.dq + r * gr.dq_stride, d, T(0));
        }
      }
      for (int64_t j = 0; j < n; ++j) {
        std::fill_n(dkv.dk + (b * kv.seq_stride + j) * dkv.dk_stride + g * d, d, T(0));
        std::fill_n(dkv.dv + (b * kv.seq_stride + j) * dkv.dv_stride + g * d, d, T(0));
      }

      // Key tile outermost so K_j, V_j and their gradient rows stay in cache across the whole query group.
      for (int64_t j0 = key_tile_start(first, 0, kTile); j0 <= last; j0 += kTile) {
        const T *K = kv.k + (b * kv.seq_stride + j0) * kv.k_stride + g * d;
        const T *V = kv.v + (b * kv.seq_stride + j0) * kv.v_stride + g * d;
        T *dK = dkv.dk + (b * kv.seq_stride + j0) * dkv.dk_stride + g * d;
        T *dV = dkv.dv + (b * kv.seq_stride + j0) * dkv.dv_stride + g * d;
        for (size_t k = 0; k < entries.size(); ++k) {
          const QueryHead<T> &qh = heads[(size_t)entries[k]];
          const QueryHeadGrad<T> &gr = grads[(size_t)entries[k]];
          const int64_t h = qh.head, rb = qh.rows->begin[(size_t)b], re = qh.rows->begin[(size_t)b + 1];
          for (int64_t r0 = rb, r1 = rb; r0 < re; r0 = r1) {
            r1 = query_chunk_end(qh.rows->pos.data(), r0, re, kTile);
            const int64_t mq = r1 - r0;
            const int32_t *pos = qh.rows->pos.data() + r0;
            // The whole chunk precedes this key tile, or its windows all start after it.
            if (pos[mq - 1] < j0 || first_visible_key(pos[0], s.window) >= j0 + kTile) continue;
            const int64_t nk = std::min(kTile, pos[mq - 1] + 1 - j0);
            const T *Q = qh.q + r0 * qh.q_stride, *dO = gr.dout + r0 * gr.dout_stride;
            T *dQ = gr.dq + r0 * gr.dq_stride;
            gemm(Trans::No, Trans::Yes, mq, nk, d, scale, Q, qh.q_stride, K, kv.k_stride, T(0), P, span);
            gemm(Trans::No, Trans::Yes, mq, nk, d, T(1), dO, gr.dout_stride, V, kv.v_stride, T(0), dS, span);
            for (int64_t r = 0; r < mq; ++r) {
              T *Pr = P + r * span, *dSr = dS + r * span;
              int64_t lo, hi;
              visible_keys(pos[r], s.window, j0, nk, &lo, &hi);
              const T li = qh.lse[r0 + r], Di = D[(size_t)(d_offset[k] + r0 + r - rb)];
              if (drop) {
                T *Pdr = Pd + r * span;
                const uint64_t e0 = (uint64_t)(((b * H + h) * n + pos[r]) * n + j0);
                for (int64_t c = 0; c < nk; ++c) {
                  const bool visible = c >= lo && c < hi;
                  const T p = visible ? fast_exp(Pr[c] - li) : T(0);
                  const T z = visible && dropout.keep(e0 + (uint64_t)c) ? keep_scale : T(0);
                  Pdr[c] = p * z;
                  dSr[c] = p * (dSr[c] * z - Di);
                }
              } else {
#pragma omp simd
                for (int64_t c = 0; c < nk; ++c) {
                  const T p = (c >= lo && c < hi) ? fast_exp(Pr[c] - li) : T(0);
                  Pr[c] = p;
                  dSr[c] = p * (dSr[c] - Di);
                }
              }
            }
            const T *Pused = drop ? Pd : P;
            gemm(Trans::Yes, Trans::No, nk, d, mq, T(1), Pused, span, dO, gr.dout_stride, T(1), dV, dkv.dv_stride);
            gemm(Trans::Yes, Trans::No, nk, d, mq, scale, dS, span, Q, qh.q_stride, T(1), dK, dkv.dk_stride);
            gemm(Trans::No, Trans::No, mq, d, nk, scale, dS, span, K, kv.k_stride, T(1), dQ, gr.dq_stride);
          }
        }
      }
    }
  });
}

#define MOAS_INSTANTIATE(T)                                                                                     \
  template void check_attention_dims<T>(const AttentionDims &, const KeyValues<T> &,                            \
                                        const std::vector<QueryHead<T>> &);                                     \
  template void attention_forward<T>(const AttentionDims &, const KeyValues<T> &,                               \
                                     const std::vector<QueryHead<T>> &, const Dropout &);                       \
  template void attention_backward<T>(const AttentionDims &, const KeyValues<T> &,                              \
                                      const std::vector<QueryHead<T>> &, const std::vector<QueryHeadGrad<T>> &, \
                                      const KeyValueGrads<T> &, const Dropout &);
MOAS_INSTANTIATE(float)
MOAS_INSTANTIATE(double)
#undef MOAS_INSTANTIATE

}  // namespace moas
