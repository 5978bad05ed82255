#include "attention/attention_decode.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "attention/attention_math.hpp"
#include "attention/query_chunks.hpp"
#include "base/gemm.hpp"
#include "base/parallel.hpp"

namespace moas {

namespace {

// Keys per part of a row's range: a 256-position context is one part, 4096 positions are 8 that threads share.
constexpr int64_t kPartKeys = 512;
// Keys per tile within a part: the tile's keys and values (64 x head_dim each) stay in L1 for the whole group.
constexpr int64_t kTileKeys = 64;

// One (sequence, kv head, part) task's view of the rows it serves: the listed heads of that kv head with a row in
// that sequence.
struct DecodeTask {
  int64_t b, g, part;
  int64_t first, last;  // the keys this part covers: [first, last]
};

template <typename T>
struct DecodeScratch {
  std::vector<DecodeTask> tasks;
  std::vector<T> partial;  // per task and group row: m, l, acc[d]
};

template <typename T>
DecodeScratch<T> &kept_scratch() {
  thread_local DecodeScratch<T> scratch;
  return scratch;
}

// A thread's buffer of at least n elements, kept across calls (a decode step allocates nothing).
template <typename E, int kSlot>
E *thread_buffer(size_t n) {
  thread_local std::vector<E> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
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
  const int64_t d = s.head_dim, Hkv = s.kv_heads;
  const T scale = T(1) / std::sqrt(T(d));
  const KvGroupTasks &plan = kv_group_tasks(s, heads);
  int64_t group_rows = 1;  // the most listed heads any kv head has
  for (const std::vector<int64_t> &entries : plan.entries_of)
    group_rows = std::max<int64_t>(group_rows, (int64_t)entries.size());
  const int64_t slot = 2 + d;  // m, l, acc

  // Tasks: each (sequence, kv head) with rows splits the keys its rows see into parts of kPartKeys. Storage for the
  // most parts the held keys allow, so that the steps of a decode allocate nothing as the context grows.
  DecodeScratch<T> &scratch = kept_scratch<T>();
  const size_t most_tasks = plan.tasks.size() * (size_t)((kv.seq_stride - 1) / kPartKeys + 1);
  scratch.tasks.clear();
  scratch.tasks.reserve(most_tasks);
  if (scratch.partial.size() < most_tasks * (size_t)(group_rows * slot))
    scratch.partial.resize(most_tasks * (size_t)(group_rows * slot));
  int64_t work = 0;
  for (int64_t task : plan.tasks) {
    const int64_t b = task / Hkv, g = task % Hkv;
    int64_t first = -1, last = -1;
    for (int64_t e : plan.entries_of[(size_t)g]) {
      const RowSet &rows = *heads[(size_t)e].rows;
      const int64_t r = rows.begin[(size_t)b];
      if (r == rows.begin[(size_t)b + 1]) continue;
      const int64_t pos = rows.pos[(size_t)r], start = first_visible_key(pos, s.window);
      first = first < 0 ? start : std::min(first, start);
      last = std::max(last, pos);
    }
    if (last < 0) continue;
    const int64_t parts = (last - first) / kPartKeys + 1;
    for (int64_t p = 0; p < parts; ++p)
      scratch.tasks.push_back({b, g, p, first + p * kPartKeys, std::min(last, first + (p + 1) * kPartKeys - 1)});
    work += (last - first + 1) * (int64_t)plan.entries_of[(size_t)g].size() * d;
  }
  const int64_t n_tasks = (int64_t)scratch.tasks.size();
  T *partial = scratch.partial.data();

  std::atomic<int64_t> next{0};
  parallel_region(worth_threads(2 * work), [&](int64_t, int64_t) {
    T *Q = thread_buffer<T, 0>((size_t)(group_rows * d)), *S = thread_buffer<T, 1>((size_t)(group_rows * kTileKeys));
    int64_t *pos = thread_buffer<int64_t, 2>((size_t)group_rows);
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < n_tasks;) {
      const DecodeTask &task = scratch.tasks[(size_t)t];
      const std::vector<int64_t> &entries = plan.entries_of[(size_t)task.g];
      T *out = partial + t * group_rows * slot;
      // The group's rows gathered into one [n, d] block, so that a tile's scores are one product that reads K once.
      int64_t n = 0;
      for (int64_t e : entries) {
        const QueryHead<T> &qh = heads[(size_t)e];
        const int64_t r = qh.rows->begin[(size_t)task.b];
        if (r == qh.rows->begin[(size_t)task.b + 1]) continue;
        std::copy_n(qh.q + r * qh.q_stride, d, Q + n * d);
        pos[n] = qh.rows->pos[(size_t)r];
        T *o = out + n * slot;
        o[0] = negative_infinity<T>();
        o[1] = T(0);
        std::fill_n(o + 2, d, T(0));
        ++n;
      }
      for (int64_t j0 = task.first; j0 <= task.last; j0 += kTileKeys) {
        const int64_t nk = std::min(kTileKeys, task.last + 1 - j0);
        const int64_t key = task.b * kv.seq_stride + j0 - kv.first_key;
        const T *K = kv.k + key * kv.k_stride + task.g * d, *V = kv.v + key * kv.v_stride + task.g * d;
        gemm(Trans::No, Trans::Yes, n, nk, d, scale, Q, d, K, kv.k_stride, T(0), S, kTileKeys);
        for (int64_t r = 0; r < n; ++r) {
          T *o = out + r * slot, *Sr = S + r * kTileKeys;
          int64_t lo, hi;
          visible_keys(pos[r], s.window, j0, nk, &lo, &hi);
          const T alpha = online_softmax_update(Sr, lo, hi, nk, o[0], o[1]);
          if (alpha != T(1)) {
#pragma omp simd
            for (int64_t c = 0; c < d; ++c) o[2 + c] *= alpha;
          }
        }
        // acc_r += P_r V over the tile, each value row read once for the whole group.
        for (int64_t c = 0; c < nk; ++c) {
          const T *v = V + c * kv.v_stride;
          for (int64_t r = 0; r < n; ++r) {
            const T p = S[r * kTileKeys + c];
            T *acc = out + r * slot + 2;
#pragma omp simd
            for (int64_t x = 0; x < d; ++x) acc[x] += p * v[x];
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
    int64_t n = 0;
    for (int64_t e : plan.entries_of[(size_t)head_task.g]) {
      const QueryHead<T> &qh = heads[(size_t)e];
      const int64_t r = qh.rows->begin[(size_t)head_task.b];
      if (r == qh.rows->begin[(size_t)head_task.b + 1]) continue;
      T m = negative_infinity<T>();
      for (int64_t t = t0; t < t1; ++t) m = std::max(m, partial[(t * group_rows + n) * slot]);
      T l = 0;
      T *orow = qh.out + r * qh.out_stride;
      std::fill_n(orow, d, T(0));
      for (int64_t t = t0; t < t1; ++t) {
        const T *part = partial + (t * group_rows + n) * slot;
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
      ++n;
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
