#include "attention/attention_decode.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "attention/attention_math.hpp"
#include "attention/decode_tile.hpp"
#include "attention/query_chunks.hpp"
#include "base/gemm.hpp"
#include "base/parallel.hpp"
#include "base/thread_scratch.hpp"

namespace moas {

namespace {

// Keys per part of a sequence's range: a 256-position context is one part, 4096 positions are 8 that threads share.
constexpr int64_t kPartKeys = 512;
// Keys per tile within a part: the tile's cache rows (every kv head's keys, then values) stay in L1/L2 while every
// kv head's query rows meet them.
constexpr int64_t kTileKeys = 32;

// One query row of a sequence: its listed head, kv head and position. A sequence's rows are kept grouped by kv head.
struct DecodeRow {
  int64_t entry, g, pos;
};

// One (sequence, part) task: the keys [first, last] of the sequence's rows rows[begin, end).
struct DecodeTask {
  int64_t b, part, begin, end;
  int64_t first, last;
};

template <typename T>
struct DecodeScratch {
  std::vector<DecodeRow> rows;    // every sequence's rows, sequence by sequence
  std::vector<DecodeTask> tasks;  // sequence by sequence, parts in order
  std::vector<T> partial;         // per task and row of its sequence: m, l, acc[d]
};

template <typename T>
DecodeScratch<T> &kept_scratch() {
  thread_local DecodeScratch<T> scratch;
  return scratch;
}

}  // namespace

template <typename T>
bool one_row_per_sequence(const AttentionDims &s, const std::vector<QueryHead<T>> &heads) {
  for (const QueryHead<T> &qh : heads)
    if (qh.rows->size() > s.batch) return false;
  for (const QueryHead<T> &qh : heads)
    for (int64_t b = 0; b < s.batch; ++b)
      if (qh.rows->begin[(size_t)b + 1] - qh.rows->begin[(size_t)b] > 1) return false;
  return true;
}

template <typename T>
void attention_decode(const AttentionDims &s, const KeyValues<T> &kv, const std::vector<QueryHead<T>> &heads) {
  const int64_t d = s.head_dim, group = s.heads / s.kv_heads, n_heads = (int64_t)heads.size();
  const T scale = T(1) / std::sqrt(T(d));
  const int64_t slot = 2 + d;  // m, l, acc
  const bool tiled = tile_kernels_fit(d);

  // Rows and tasks. Storage for every head's row of every sequence and the most parts the held keys allow, so that
  // the steps of a decode allocate nothing as the context grows.
  DecodeScratch<T> &scratch = kept_scratch<T>();
  const size_t most_parts = (size_t)((kv.seq_stride - 1) / kPartKeys + 1);
  scratch.rows.clear();
  scratch.rows.reserve((size_t)(s.batch * n_heads));
  scratch.tasks.clear();
  scratch.tasks.reserve((size_t)s.batch * most_parts);
  if (scratch.partial.size() < (size_t)s.batch * most_parts * (size_t)(n_heads * slot))
    scratch.partial.resize((size_t)s.batch * most_parts * (size_t)(n_heads * slot));
  int64_t work = 0;
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t begin = (int64_t)scratch.rows.size();
    int64_t first = -1, last = -1;
    for (int64_t g = 0; g < s.kv_heads; ++g)
      for (int64_t e = 0; e < n_heads; ++e) {
        const QueryHead<T> &qh = heads[(size_t)e];
        const int64_t r = qh.rows->begin[(size_t)b];
        if (kv_head_of(qh.head, group) != g || r == qh.rows->begin[(size_t)b + 1]) continue;
        const int64_t pos = qh.rows->pos[(size_t)r], start = first_visible_key(pos, s.window);
        scratch.rows.push_back({e, g, pos});
        first = first < 0 ? start : std::min(first, start);
        last = std::max(last, pos);
      }
    const int64_t end = (int64_t)scratch.rows.size();
    if (last < 0) continue;
    const int64_t parts = (last - first) / kPartKeys + 1;
    for (int64_t p = 0; p < parts; ++p)
      scratch.tasks.push_back(
          {b, p, begin, end, first + p * kPartKeys, std::min(last, first + (p + 1) * kPartKeys - 1)});
    work += (last - first + 1) * (end - begin) * d;
  }
  const int64_t n_tasks = (int64_t)scratch.tasks.size();
  T *partial = scratch.partial.data();
  const DecodeRow *all_rows = scratch.rows.data();

  std::atomic<int64_t> next{0};
  parallel_region(worth_threads(2 * work), [&](int64_t, int64_t) {
    T *Q = thread_scratch<T, 0>((size_t)(n_heads * d));
    T *S = thread_scratch<T, 1>((size_t)(n_heads * kTileKeys));
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < n_tasks;) {
      const DecodeTask &task = scratch.tasks[(size_t)t];
      const DecodeRow *rows = all_rows + task.begin;
      const int64_t n = task.end - task.begin;
      T *out = partial + t * n_heads * slot;
      // f(i0, i1, g) for each run of rows [i0, i1) that reads kv head g.
      auto for_each_kv_head = [&](auto &&f) {
        for (int64_t i0 = 0, i1; i0 < n; i0 = i1) {
          for (i1 = i0 + 1; i1 < n && rows[i1].g == rows[i0].g;) ++i1;
          f(i0, i1, rows[i0].g);
        }
      };
      for (int64_t i = 0; i < n; ++i) {
        const QueryHead<T> &qh = heads[(size_t)rows[i].entry];
        std::copy_n(qh.q + qh.rows->begin[(size_t)task.b] * qh.q_stride, d, Q + i * d);
        T *o = out + i * slot;
        o[0] = negative_infinity<T>();
        o[1] = T(0);
        std::fill_n(o + 2, d, T(0));
      }
      for (int64_t j0 = task.first; j0 <= task.last; j0 += kTileKeys) {
        const int64_t nk = std::min(kTileKeys, task.last + 1 - j0);
        const int64_t key = task.b * kv.seq_stride + j0 - kv.first_key;
        const T *K = kv.k + key * kv.k_stride, *V = kv.v + key * kv.v_stride;
        // Scores kv head by kv head: one product per group reads that head's keys once for all its rows, and the
        // heads together read the tile's cache rows whole.
        for_each_kv_head([&](int64_t i0, int64_t i1, int64_t g) {
          if (tiled)
            tile_scores(Q + i0 * d, i1 - i0, K + g * d, kv.k_stride, nk, d, scale, S + i0 * kTileKeys, kTileKeys);
          else
            gemm(Trans::No, Trans::Yes, i1 - i0, nk, d, scale, Q + i0 * d, d, K + g * d, kv.k_stride, T(0),
                 S + i0 * kTileKeys, kTileKeys);
        });
        for (int64_t i = 0; i < n; ++i) {
          T *o = out + i * slot;
          int64_t lo, hi;
          visible_keys(rows[i].pos, s.window, j0, nk, &lo, &hi);
          const T alpha = online_softmax_update(S + i * kTileKeys, lo, hi, nk, o[0], o[1]);
          if (alpha != T(1)) {
#pragma omp simd
            for (int64_t c = 0; c < d; ++c) o[2 + c] *= alpha;
          }
        }
        // acc_i += P_i V over the tile, each kv head's values read once for all its rows.
        if (tiled) {
          for_each_kv_head([&](int64_t i0, int64_t i1, int64_t g) {
            tile_values(S + i0 * kTileKeys, kTileKeys, i1 - i0, V + g * d, kv.v_stride, nk, d, out + i0 * slot + 2,
                        slot);
          });
        } else {
          for (int64_t c = 0; c < nk; ++c) {
            const T *v_row = V + c * kv.v_stride;
            for (int64_t i = 0; i < n; ++i) {
              const T p = S[i * kTileKeys + c], *v = v_row + rows[i].g * d;
              T *acc = out + i * slot + 2;
#pragma omp simd
              for (int64_t x = 0; x < d; ++x) acc[x] += p * v[x];
            }
          }
        }
      }
    }
  });

  // Each row's parts merged in order: out = sum_p e^(m_p - m) acc_p / sum_p e^(m_p - m) l_p.
  for (int64_t t0 = 0; t0 < n_tasks;) {
    const DecodeTask &head_task = scratch.tasks[(size_t)t0];
    int64_t t1 = t0 + 1;
    while (t1 < n_tasks && scratch.tasks[(size_t)t1].part > 0) ++t1;
    for (int64_t i = 0; i < head_task.end - head_task.begin; ++i) {
      const DecodeRow &row = all_rows[head_task.begin + i];
      const QueryHead<T> &qh = heads[(size_t)row.entry];
      const int64_t r = qh.rows->begin[(size_t)head_task.b];
      T m = negative_infinity<T>();
      for (int64_t t = t0; t < t1; ++t) m = std::max(m, partial[(t * n_heads + i) * slot]);
      T l = 0;
      T *orow = qh.out + r * qh.out_stride;
      std::fill_n(orow, d, T(0));
      for (int64_t t = t0; t < t1; ++t) {
        const T *part = partial + (t * n_heads + i) * slot;
        if (part[1] == T(0)) continue;  // no visible key in this part
        const T w = fast_exp(part[0] - m);
        l += w * part[1];
#pragma omp simd
        for (int64_t x = 0; x < d; ++x) orow[x] += w * part[2 + x];
      }
      const T inv = T(1) / l;
#pragma omp simd
      for (int64_t x = 0; x < d; ++x) orow[x] *= inv;
      qh.lse[r] = m + std::log(l);
    }
    t0 = t1;
  }
}

template bool one_row_per_sequence<float>(const AttentionDims &, const std::vector<QueryHead<float>> &);
template bool one_row_per_sequence<double>(const AttentionDims &, const std::vector<QueryHead<double>> &);
template void attention_decode<float>(const AttentionDims &, const KeyValues<float> &,
                                      const std::vector<QueryHead<float>> &);
template void attention_decode<double>(const AttentionDims &, const KeyValues<double> &,
                                       const std::vector<QueryHead<double>> &);

}  // namespace moas
