#include "attention/cope_attention.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "attention/attention_math.hpp"
#include "attention/cope_math.hpp"
#include "attention/query_chunks.hpp"
#include "base/error.hpp"
#include "base/fast_math.hpp"
#include "base/gemm.hpp"
#include "base/parallel.hpp"

namespace moas {
namespace {

// Rows per chunk: the compact rows of one sequence in one band of kTile positions (query_chunk_end), as
// attention.cpp's chunks.
constexpr int64_t kTile = 64;

// The keys a chunk of rows sees, first .. first + n - 1 (from its first row's window start to its last row's
// position), and the positions 0 .. reach - 1 its gates can count to (a sum of at most n gates stays within n, so z
// beyond n is never read).
struct ChunkKeys {
  int64_t first, n, reach;
};

ChunkKeys chunk_keys(const int32_t *pos, int64_t rows, int64_t window, int64_t max_pos) {
  const int64_t first = first_visible_key(pos[0], window), n = pos[rows - 1] + 1 - first;
  return {first, n, std::min(max_pos, n + 1)};
}

// The largest chunk (rows, and keys it sees) over every listed head and sequence: the size of the per-thread scratch.
template <typename T>
void largest_chunk(const AttentionDims &s, const std::vector<QueryHead<T>> &heads, int64_t max_pos, int64_t *rows,
                   int64_t *keys) {
  *rows = *keys = 1;
  for (const QueryHead<T> &qh : heads)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t r0 = qh.rows->begin[(size_t)b], r1 = r0; r0 < qh.rows->begin[(size_t)b + 1]; r0 = r1) {
        r1 = query_chunk_end(qh.rows->pos.data(), r0, qh.rows->begin[(size_t)b + 1], kTile);
        *rows = std::max(*rows, r1 - r0);
        *keys = std::max(*keys, chunk_keys(qh.rows->pos.data() + r0, r1 - r0, s.window, max_pos).n);
      }
}

// Scratch of one chunk, per thread: [rows, keys] logits (then probabilities), [rows, keys] their gradients (backward),
// [rows, reach] z_n = q . e[n] and its gradient (backward), and one row's gates and positions.
template <typename T>
struct ChunkScratch {
  ChunkScratch(int64_t rows, int64_t keys, int64_t max_pos, bool backward)
      : ld(keys),
        ld_z(std::min(max_pos, keys + 1)),
        score((size_t)(rows * ld)),
        d_score(backward ? (size_t)(rows * ld) : 0),
        z((size_t)(rows * ld_z)),
        dz(backward ? (size_t)(rows * ld_z) : 0),
        gate((size_t)keys),
        position((size_t)keys) {}
  int64_t ld, ld_z;
  std::vector<T> score, d_score, z, dz, gate, position;
};

// Compact rows r0 .. r0 + rows - 1 of a query head in sequence b, the keys and values they see and the head's
// embeddings.
template <typename T>
struct Chunk {
  const int32_t *pos;
  const T *q, *k, *v, *e;  // k, v at key `keys.first`
  int64_t rows;
  ChunkKeys keys;
};

template <typename T>
Chunk<T> chunk_at(const AttentionDims &s, const KeyValues<T> &kv, const QueryHead<T> &qh,
                  const CopeEmbeddings<T> &cope, int64_t b, int64_t r0, int64_t r1) {
  const int64_t d = s.head_dim, g = kv_head_of(qh.head, s.heads / s.kv_heads);
  const int32_t *pos = qh.rows->pos.data() + r0;
  const ChunkKeys keys = chunk_keys(pos, r1 - r0, s.window, cope.max_pos);
  const int64_t key = b * kv.seq_stride + keys.first - kv.first_key;
  return {pos,
          qh.q + r0 * qh.q_stride,
          kv.k + key * kv.k_stride + g * d,
          kv.v + key * kv.v_stride + g * d,
          cope.e + qh.head * cope.max_pos * d,
          r1 - r0,
          keys};
}

// The chunk's scaled q . k in sc.score and its z in sc.z, two products; the backward recomputes them rather than
// keeping O(T) per row.
template <typename T>
void chunk_products(const Chunk<T> &ch, int64_t q_stride, int64_t k_stride, int64_t d, T scale, ChunkScratch<T> &sc) {
  gemm(Trans::No, Trans::Yes, ch.rows, ch.keys.n, d, scale, ch.q, q_stride, ch.k, k_stride, T(0), sc.score.data(),
       sc.ld);
  gemm(Trans::No, Trans::Yes, ch.rows, ch.keys.reach, d, T(1), ch.q, q_stride, ch.e, d, T(0), sc.z.data(), sc.ld_z);
}

// One row's logits over its visible columns [lo, hi) of the chunk: score holds q . k / sqrt(d) there on entry and the
// full logit on return, with the gates and the positions they count in sc.gate and sc.position.
template <typename T>
void row_logits(T *score, const T *z, int64_t lo, int64_t hi, int64_t max_pos, ChunkScratch<T> &sc) {
  T *gate = sc.gate.data(), *position = sc.position.data();
#pragma omp simd
  for (int64_t c = lo; c < hi; ++c) gate[c] = T(1) / (T(1) + fast_exp(-score[c]));
  cope_positions(gate + lo, hi - lo, max_pos, position + lo);
#pragma omp simd
  for (int64_t c = lo; c < hi; ++c) score[c] += cope_interpolate(z, position[c]);
}

template <typename T>
void check_cope(const AttentionDims &s, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads,
                const CopeEmbeddings<T> &cope) {
  check_attention_dims(s, kv, heads);
  MOAS_REQUIRE(cope.e && cope.max_pos >= 1, MOAS_ERR_INVALID_CONFIG, "CoPE attention: no position embeddings");
}

}  // namespace

template <typename T>
void cope_attention_forward(const AttentionDims &s, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads,
                            const CopeEmbeddings<T> &cope, const Dropout &dropout) {
  check_cope(s, kv, heads, cope);
  const int64_t H = s.heads, d = s.head_dim, P = cope.max_pos;
  const T scale = T(1) / std::sqrt(T(d));
  const bool drop = dropout.active();
  const T keep_scale = drop ? T(1) / (T(1) - T(dropout.p)) : T(1);

  // Per row and key: the q . k and A V products; per row and reachable position: z.
  int64_t total_cost, max_rows, max_keys;
  std::vector<QueryChunk> &chunks = kept_query_chunks();
  query_chunks(
      s, heads, kTile, [P](int64_t rows, int64_t span) { return rows * (2 * span + std::min(P, span + 1)); }, chunks,
      &total_cost);
  const int64_t n_chunks = (int64_t)chunks.size();
  largest_chunk(s, heads, P, &max_rows, &max_keys);

#pragma omp parallel if (worth_threads(total_cost * d))
  {
    ChunkScratch<T> sc(max_rows, max_keys, P, false);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < n_chunks; ++task) {
      const QueryChunk &qc = chunks[(size_t)task];
      const QueryHead<T> &qh = heads[(size_t)qc.entry];
      const Chunk<T> ch = chunk_at(s, kv, qh, cope, qc.b, qc.r0, qc.r1);
      const int64_t n = ch.keys.n;
      chunk_products(ch, qh.q_stride, kv.k_stride, d, scale, sc);
      for (int64_t r = 0; r < ch.rows; ++r) {
        T *score = sc.score.data() + r * sc.ld;
        int64_t lo, hi;
        visible_keys(ch.pos[r], s.window, ch.keys.first, n, &lo, &hi);
        row_logits(score, sc.z.data() + r * sc.ld_z, lo, hi, P, sc);
        T mx = score[lo];
#pragma omp simd reduction(max : mx)
        for (int64_t c = lo + 1; c < hi; ++c) mx = score[c] > mx ? score[c] : mx;
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = lo; c < hi; ++c) sum += (score[c] = fast_exp(score[c] - mx));
        const T inv = T(1) / sum;
        std::fill(score, score + lo, T(0));
        std::fill(score + hi, score + n, T(0));
#pragma omp simd
        for (int64_t c = lo; c < hi; ++c) score[c] *= inv;
        if (drop) {
          const uint64_t e0 = (uint64_t)(((qc.b * H + qh.head) * s.seq + ch.pos[r]) * s.seq + ch.keys.first);
          for (int64_t c = lo; c < hi; ++c) score[c] = dropout.keep(e0 + (uint64_t)c) ? score[c] * keep_scale : T(0);
        }
        qh.lse[qc.r0 + r] = mx + std::log(sum);
      }
      gemm(Trans::No, Trans::No, ch.rows, d, n, T(1), sc.score.data(), sc.ld, ch.v, kv.v_stride, T(0),
           qh.out + qc.r0 * qh.out_stride, qh.out_stride);
    }
  }
}

// Per row, with A = exp(s - lse), M the dropout multipliers and D = dout . out (as attention_backward):
//   dv_j += A_j M_j dout,  ds_j = A_j (M_j dout . v_j - D)
//   through s_j = raw_j + cope_interpolate(z, p_j):  d raw_j = ds_j,  dz += interpolation weights x ds_j,
//                                                    dp_j = ds_j cope_slope(z, p_j)
//   through p (suffix sums of the gates) and g = sigmoid(raw):  d raw_t += (sum_{j <= t} dp_j) g_t (1 - g_t)
//   dq = scale sum_j d raw_j k_j + sum_n dz_n e_n,  dk_j += scale d raw_j q,  de_n += dz_n q,
// the sums over j, n and the chunk's rows as products. One task per (sequence, kv head) owns that kv head's dk/dv
// rows and the dq rows of its group's listed heads, as in attention_backward, and visits its chunks in a fixed order.
// de of a head gathers every sequence: each task adds into its own sequence's slice of a [B, H, P, d] buffer, summed
// over sequences in order afterwards, so no sum depends on the thread count.
template <typename T>
void cope_attention_backward(const AttentionDims &s, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads,
                             const std::vector<QueryHeadGrad<T>> &grads, const KeyValueGrads<T> &dkv,
                             const CopeEmbeddings<T> &cope, T *de, const Dropout &dropout) {
  check_cope(s, kv, heads, cope);
  MOAS_REQUIRE(grads.size() == heads.size(), MOAS_ERR_SIZE_MISMATCH,
               "CoPE attention backward: one gradient view per head");
  MOAS_REQUIRE(kv.first_key == 0, MOAS_ERR_SIZE_MISMATCH,
               "CoPE attention backward: the keys must start at position 0");
  MOAS_REQUIRE(de != nullptr, MOAS_ERR_INVALID_CONFIG, "CoPE attention backward: no embedding gradient");
  const int64_t H = s.heads, Hkv = s.kv_heads, d = s.head_dim, n_pos = s.seq, P = cope.max_pos;
  const T scale = T(1) / std::sqrt(T(d));
  const bool drop = dropout.active();
  const T keep_scale = drop ? T(1) / (T(1) - T(dropout.p)) : T(1);

  const KvGroupTasks &plan = kv_group_tasks(s, heads);
  const std::vector<std::vector<int64_t>> &entries_of = plan.entries_of;
  const std::vector<int64_t> &tasks = plan.tasks;
  const int64_t n_tasks = (int64_t)tasks.size(), total_rows = plan.total_rows;
  std::vector<bool> listed((size_t)H, false);
  for (const QueryHead<T> &qh : heads) listed[(size_t)qh.head] = true;
  std::vector<T> de_per_sequence((size_t)(s.batch * H * P * d), T(0));
  int64_t max_rows, max_keys;
  largest_chunk(s, heads, P, &max_rows, &max_keys);

#pragma omp parallel if (worth_threads(total_rows * n_pos * d / std::max<int64_t>(s.batch, 1)))
  {
    ChunkScratch<T> sc(max_rows, max_keys, P, true);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t b = tasks[(size_t)task] / Hkv, g = tasks[(size_t)task] % Hkv;
      for (int64_t j = 0; j < n_pos; ++j) {
        std::fill_n(dkv.dk + (b * kv.seq_stride + j) * dkv.dk_stride + g * d, d, T(0));
        std::fill_n(dkv.dv + (b * kv.seq_stride + j) * dkv.dv_stride + g * d, d, T(0));
      }
      for (int64_t entry : entries_of[(size_t)g]) {
        const QueryHead<T> &qh = heads[(size_t)entry];
        const QueryHeadGrad<T> &gr = grads[(size_t)entry];
        T *de_head = de_per_sequence.data() + (b * H + qh.head) * P * d;
        const int64_t re = qh.rows->begin[(size_t)b + 1];
        for (int64_t r0 = qh.rows->begin[(size_t)b], r1 = r0; r0 < re; r0 = r1) {
          r1 = query_chunk_end(qh.rows->pos.data(), r0, re, kTile);
          const Chunk<T> ch = chunk_at(s, kv, qh, cope, b, r0, r1);
          const int64_t n = ch.keys.n, reach = ch.keys.reach;
          const T *dO = gr.dout + r0 * gr.dout_stride;
          chunk_products(ch, qh.q_stride, kv.k_stride, d, scale, sc);
          gemm(Trans::No, Trans::Yes, ch.rows, n, d, T(1), dO, gr.dout_stride, ch.v, kv.v_stride, T(0),
               sc.d_score.data(), sc.ld);
          for (int64_t r = 0; r < ch.rows; ++r) {
            // score: the logits, then A M (for dv); d_score: dout . v, then ds, then d raw (for dq and dk).
            T *score = sc.score.data() + r * sc.ld, *d_score = sc.d_score.data() + r * sc.ld;
            const T *z = sc.z.data() + r * sc.ld_z;
            T *dz = sc.dz.data() + r * sc.ld_z, *gate = sc.gate.data(), *position = sc.position.data();
            int64_t lo, hi;
            visible_keys(ch.pos[r], s.window, ch.keys.first, n, &lo, &hi);
            row_logits(score, z, lo, hi, P, sc);
            const T *out = qh.out + (r0 + r) * qh.out_stride, *dout = dO + r * gr.dout_stride;
            T D = 0;
#pragma omp simd reduction(+ : D)
            for (int64_t c = 0; c < d; ++c) D += out[c] * dout[c];
            const T lse = qh.lse[r0 + r];
#pragma omp simd
            for (int64_t c = lo; c < hi; ++c) score[c] = fast_exp(score[c] - lse);
            if (drop) {
              const uint64_t e0 = (uint64_t)(((b * H + qh.head) * n_pos + ch.pos[r]) * n_pos + ch.keys.first);
              for (int64_t c = lo; c < hi; ++c) {
                const T mask = dropout.keep(e0 + (uint64_t)c) ? keep_scale : T(0);
                d_score[c] = score[c] * (mask * d_score[c] - D);
                score[c] *= mask;
              }
            } else {
#pragma omp simd
              for (int64_t c = lo; c < hi; ++c) d_score[c] = score[c] * (d_score[c] - D);
            }
            std::fill_n(dz, reach, T(0));
            for (int64_t c = lo; c < hi; ++c) cope_interpolate_backward(d_score[c], position[c], dz);
#pragma omp simd
            for (int64_t c = lo; c < hi; ++c) position[c] = d_score[c] * cope_slope(z, position[c]);  // now dp
            cope_positions_backward(position + lo, hi - lo, position + lo);  // now d gate
#pragma omp simd
            for (int64_t c = lo; c < hi; ++c)
              d_score[c] = scale * (d_score[c] + position[c] * gate[c] * (T(1) - gate[c]));
            std::fill(score, score + lo, T(0));
            std::fill(score + hi, score + n, T(0));
            std::fill(d_score, d_score + lo, T(0));
            std::fill(d_score + hi, d_score + n, T(0));
          }
          T *dQ = gr.dq + r0 * gr.dq_stride;
          T *dK = dkv.dk + (b * kv.seq_stride + ch.keys.first) * dkv.dk_stride + g * d;
          T *dV = dkv.dv + (b * kv.seq_stride + ch.keys.first) * dkv.dv_stride + g * d;
          gemm(Trans::No, Trans::No, ch.rows, d, n, T(1), sc.d_score.data(), sc.ld, ch.k, kv.k_stride, T(0), dQ,
               gr.dq_stride);
          gemm(Trans::No, Trans::No, ch.rows, d, reach, T(1), sc.dz.data(), sc.ld_z, ch.e, d, T(1), dQ, gr.dq_stride);
          gemm(Trans::Yes, Trans::No, n, d, ch.rows, T(1), sc.d_score.data(), sc.ld, ch.q, qh.q_stride, T(1), dK,
               dkv.dk_stride);
          gemm(Trans::Yes, Trans::No, n, d, ch.rows, T(1), sc.score.data(), sc.ld, dO, gr.dout_stride, T(1), dV,
               dkv.dv_stride);
          gemm(Trans::Yes, Trans::No, reach, d, ch.rows, T(1), sc.dz.data(), sc.ld_z, ch.q, qh.q_stride, T(1), de_head,
               d);
        }
      }
    }
  }

  const int64_t PD = P * d;
  parallel_for(H * PD, s.batch * H * PD >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
      if (!listed[(size_t)(i / PD)]) continue;
      T sum = 0;
      for (int64_t b = 0; b < s.batch; ++b) sum += de_per_sequence[(size_t)(b * H * PD + i)];
      de[i] += sum;
    }
  });
}

#define MOAS_INSTANTIATE(T)                                                                                          \
  template void cope_attention_forward<T>(const AttentionDims &, const KeyValues<T> &,                               \
                                          const std::vector<QueryHead<T>> &, const CopeEmbeddings<T> &,              \
                                          const Dropout &);                                                          \
  template void cope_attention_backward<T>(const AttentionDims &, const KeyValues<T> &,                              \
                                           const std::vector<QueryHead<T>> &, const std::vector<QueryHeadGrad<T>> &, \
                                           const KeyValueGrads<T> &, const CopeEmbeddings<T> &, T *, const Dropout &);
MOAS_INSTANTIATE(float)
MOAS_INSTANTIATE(double)
#undef MOAS_INSTANTIATE

}  // namespace moas
