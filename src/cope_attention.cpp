#include "cope_attention.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "attention_math.hpp"
#include "cope_math.hpp"
#include "error.hpp"
#include "fast_math.hpp"
#include "parallel.hpp"
#include "query_chunks.hpp"

namespace moas {
namespace {

// Rows per forward task: enough to amortise the scheduling, few enough to balance threads on short sequences.
constexpr int64_t kRowChunk = 16;

template <typename T>
T dot(const T *a, const T *b, int64_t n) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < n; ++c) sum += a[c] * b[c];
  return sum;
}

// y += a x
template <typename T>
void add_scaled(T *y, T a, const T *x, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) y[c] += a * x[c];
}

// Scratch of one row, per thread: the row's logits (then probabilities, then their gradients), gates and positions
// over its keys, and z_n = q . e[n] (and its gradient) over the positions it can reach.
template <typename T>
struct RowScratch {
  RowScratch(int64_t keys, int64_t max_pos)
      : score((size_t)keys), gate((size_t)keys), position((size_t)keys), z((size_t)max_pos), dz((size_t)max_pos) {}
  std::vector<T> score, gate, position, z, dz;
};

// Compact row r of a query head in sequence b: its q, its head's embeddings, and the n keys it sees, at positions
// first .. pos.
template <typename T>
struct Row {
  const T *q, *e;
  const T *k, *v;  // at key `first`
  int64_t pos, first, n;
};

template <typename T>
Row<T> row_at(const AttentionDims &s, const KeyValues<T> &kv, const QueryHead<T> &qh, const CopeEmbeddings<T> &cope,
              int64_t b, int64_t r) {
  const int64_t d = s.head_dim, g = kv_head_of(qh.head, s.heads / s.kv_heads), pos = qh.rows->pos[(size_t)r];
  const int64_t first = first_visible_key(pos, s.window), key = b * kv.seq_stride + first - kv.first_key;
  return {qh.q + r * qh.q_stride, cope.e + qh.head * cope.max_pos * d, kv.k + key * kv.k_stride + g * d,
          kv.v + key * kv.v_stride + g * d, pos, first, pos - first + 1};
}

// The row's logits in sc.score, with the gates and positions they came from and z over the positions the row can
// reach (a sum of n gates stays within n, so z[n + 1 ..] is never read); returns how many z it computed. The
// backward recomputes all of this rather than keeping O(T) per row.
template <typename T>
int64_t row_logits(const Row<T> &row, int64_t k_stride, int64_t d, int64_t max_pos, T scale, RowScratch<T> &sc) {
  for (int64_t j = 0; j < row.n; ++j) {
    const T raw = scale * dot(row.q, row.k + j * k_stride, d);
    sc.score[(size_t)j] = raw;
    sc.gate[(size_t)j] = T(1) / (T(1) + fast_exp(-raw));
  }
  cope_positions(sc.gate.data(), row.n, max_pos, sc.position.data());
  const int64_t reach = std::min(max_pos, row.n + 1);
  for (int64_t m = 0; m < reach; ++m) sc.z[(size_t)m] = dot(row.q, row.e + m * d, d);
  for (int64_t j = 0; j < row.n; ++j) sc.score[(size_t)j] += cope_interpolate(sc.z.data(), sc.position[(size_t)j]);
  return reach;
}

template <typename T>
void check_cope(const AttentionDims &s, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads,
                const CopeEmbeddings<T> &cope) {
  check_attention_dims(s, kv, heads);
  require(cope.e && cope.max_pos >= 1, MOAS_ERR_INVALID_CONFIG, "CoPE attention: no position embeddings");
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

  // Per row and key: the q . k dot product and the v update; per row and reachable position: z.
  int64_t total_cost;
  const std::vector<QueryChunk> chunks = query_chunks(
      s, heads, kRowChunk, [P](int64_t rows, int64_t span) { return rows * (2 * span + std::min(P, span + 1)); },
      &total_cost);
  const int64_t n_chunks = (int64_t)chunks.size();

#pragma omp parallel if (worth_threads(total_cost * d))
  {
    RowScratch<T> sc(max_visible_keys(s.seq, s.window), P);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < n_chunks; ++task) {
      const QueryChunk &ch = chunks[(size_t)task];
      const QueryHead<T> &qh = heads[(size_t)ch.entry];
      for (int64_t r = ch.r0; r < ch.r1; ++r) {
        const Row<T> row = row_at(s, kv, qh, cope, ch.b, r);
        row_logits(row, kv.k_stride, d, P, scale, sc);
        T *score = sc.score.data();
        T mx = score[0];
        for (int64_t j = 1; j < row.n; ++j) mx = std::max(mx, score[j]);
        T sum = 0;
        for (int64_t j = 0; j < row.n; ++j) sum += (score[j] = fast_exp(score[j] - mx));
        const T inv = T(1) / sum;
        T *out = qh.out + r * qh.out_stride;
        std::fill_n(out, d, T(0));
        const uint64_t e0 = (uint64_t)(((ch.b * H + qh.head) * s.seq + row.pos) * s.seq + row.first);
        for (int64_t j = 0; j < row.n; ++j) {
          T a = score[j] * inv;
          if (drop) a = dropout.keep(e0 + (uint64_t)j) ? a * keep_scale : T(0);
          add_scaled(out, a, row.v + j * kv.v_stride, d);
        }
        qh.lse[r] = mx + std::log(sum);
      }
    }
  }
}

// Per row, with A = exp(s - lse), M the dropout multipliers and D = dout . out (as attention_backward):
//   dv_j += A_j M_j dout,  ds_j = A_j (M_j dout . v_j - D)
//   through s_j = raw_j + cope_interpolate(z, p_j):  d raw_j = ds_j,  dz += interpolation weights x ds_j,
//                                                    dp_j = ds_j cope_slope(z, p_j)
//   through p (suffix sums of the gates) and g = sigmoid(raw):  d raw_t += (sum_{j <= t} dp_j) g_t (1 - g_t)
//   dq = scale sum_j d raw_j k_j + sum_n dz_n e_n,  dk_j += scale d raw_j q,  de_n += dz_n q.
// One task per (sequence, kv head) owns that kv head's dk/dv rows and the dq rows of its group's listed heads, as in
// attention_backward. de of a head gathers every sequence: each task adds into its own sequence's slice of a
// [B, H, P, d] buffer, summed over sequences in order afterwards, so no sum depends on the thread count.
template <typename T>
void cope_attention_backward(const AttentionDims &s, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads,
                             const std::vector<QueryHeadGrad<T>> &grads, const KeyValueGrads<T> &dkv,
                             const CopeEmbeddings<T> &cope, T *de, const Dropout &dropout) {
  check_cope(s, kv, heads, cope);
  require(grads.size() == heads.size(), MOAS_ERR_SIZE_MISMATCH, "CoPE attention backward: one gradient view per head");
  require(kv.first_key == 0, MOAS_ERR_SIZE_MISMATCH, "CoPE attention backward: the keys must start at position 0");
  require(de != nullptr, MOAS_ERR_INVALID_CONFIG, "CoPE attention backward: no embedding gradient");
  const int64_t H = s.heads, Hkv = s.kv_heads, d = s.head_dim, n = s.seq, P = cope.max_pos;
  const T scale = T(1) / std::sqrt(T(d));
  const bool drop = dropout.active();
  const T keep_scale = drop ? T(1) / (T(1) - T(dropout.p)) : T(1);

  const KvGroupTasks plan = kv_group_tasks(s, heads);
  const std::vector<std::vector<int64_t>> &entries_of = plan.entries_of;
  const std::vector<int64_t> &tasks = plan.tasks;
  const int64_t n_tasks = (int64_t)tasks.size(), total_rows = plan.total_rows;
  std::vector<bool> listed((size_t)H, false);
  for (const QueryHead<T> &qh : heads) listed[(size_t)qh.head] = true;
  std::vector<T> de_per_sequence((size_t)(s.batch * H * P * d), T(0));

#pragma omp parallel if (worth_threads(total_rows * n * d / std::max<int64_t>(s.batch, 1)))
  {
    RowScratch<T> sc(max_visible_keys(n, s.window), P);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t b = tasks[(size_t)task] / Hkv, g = tasks[(size_t)task] % Hkv;
      for (int64_t j = 0; j < n; ++j) {
        std::fill_n(dkv.dk + (b * kv.seq_stride + j) * dkv.dk_stride + g * d, d, T(0));
        std::fill_n(dkv.dv + (b * kv.seq_stride + j) * dkv.dv_stride + g * d, d, T(0));
      }
      for (int64_t e : entries_of[(size_t)g]) {
        const QueryHead<T> &qh = heads[(size_t)e];
        const QueryHeadGrad<T> &gr = grads[(size_t)e];
        T *de_head = de_per_sequence.data() + (b * H + qh.head) * P * d;
        for (int64_t r = qh.rows->begin[(size_t)b]; r < qh.rows->begin[(size_t)b + 1]; ++r) {
          const Row<T> row = row_at(s, kv, qh, cope, b, r);
          const int64_t reach = row_logits(row, kv.k_stride, d, P, scale, sc);
          const T *dout = gr.dout + r * gr.dout_stride;
          const T lse = qh.lse[r], D = dot(qh.out + r * qh.out_stride, dout, d);
          T *dk = dkv.dk + (b * kv.seq_stride + row.first) * dkv.dk_stride + g * d;
          T *dv = dkv.dv + (b * kv.seq_stride + row.first) * dkv.dv_stride + g * d;
          T *score = sc.score.data(), *gate = sc.gate.data(), *position = sc.position.data(), *dz = sc.dz.data();
          const uint64_t e0 = (uint64_t)(((b * H + qh.head) * n + row.pos) * n + row.first);
          for (int64_t j = 0; j < row.n; ++j) {
            const T a = fast_exp(score[j] - lse);
            const T mask = !drop || dropout.keep(e0 + (uint64_t)j) ? keep_scale : T(0);
            add_scaled(dv + j * dkv.dv_stride, a * mask, dout, d);
            score[j] = a * (mask * dot(dout, row.v + j * kv.v_stride, d) - D);  // now ds_j
          }
          std::fill_n(dz, reach, T(0));
          for (int64_t j = 0; j < row.n; ++j) {
            cope_interpolate_backward(score[j], position[j], dz);
            position[j] = score[j] * cope_slope(sc.z.data(), position[j]);  // now dp_j
          }
          cope_positions_backward(position, row.n, position);  // now d g_j
          T *dq = gr.dq + r * gr.dq_stride;
          std::fill_n(dq, d, T(0));
          for (int64_t j = 0; j < row.n; ++j) {
            const T d_raw = scale * (score[j] + position[j] * gate[j] * (T(1) - gate[j]));
            add_scaled(dq, d_raw, row.k + j * kv.k_stride, d);
            add_scaled(dk + j * dkv.dk_stride, d_raw, row.q, d);
          }
          for (int64_t m = 0; m < reach; ++m) {
            add_scaled(dq, dz[m], row.e + m * d, d);
            add_scaled(de_head + m * d, dz[m], row.q, d);
          }
        }
      }
    }
  }

  const int64_t PD = P * d;
#pragma omp parallel for schedule(static) if (s.batch * H * PD >= kParallelGrain)
  for (int64_t i = 0; i < H * PD; ++i) {
    if (!listed[(size_t)(i / PD)]) continue;
    T sum = 0;
    for (int64_t b = 0; b < s.batch; ++b) sum += de_per_sequence[(size_t)(b * H * PD + i)];
    de[i] += sum;
  }
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
