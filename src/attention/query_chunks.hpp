// How the attention kernels (tiled and CoPE) split their work into tasks. Forward: chunks of consecutive compact rows
// of one listed head in one sequence, handed out heaviest first so that dynamic scheduling ends with threads
// balanced. Backward: one task per (sequence, kv head) that some listed head reads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "attention/attention.hpp"
#include "attention/attention_math.hpp"

namespace moas {

struct QueryChunk {
  int64_t entry, b, r0, r1;  // listed head, sequence, compact rows [r0, r1)
};

// Below about a million multiply-adds, waking a thread team costs more than the work (decode steps, tests).
inline bool worth_threads(int64_t multiply_adds) { return multiply_adds >= (int64_t(1) << 20); }

// Chunks of up to `chunk_rows` rows within one band of positions (query_chunk_end), in decreasing cost(rows, span),
// span being the keys from the first row's window start to the last row's position (ties in list order); *total_cost
// gets the sum. Written into `chunks`, whose storage, like the sort's, is kept between calls.
template <typename T, class Cost>
void query_chunks(const AttentionDims &s, const std::vector<QueryHead<T>> &heads, int64_t chunk_rows, Cost &&cost,
                  std::vector<QueryChunk> &chunks, int64_t *total_cost) {
  thread_local std::vector<QueryChunk> listed;
  thread_local std::vector<int64_t> costs;
  thread_local std::vector<size_t> order;
  listed.clear();
  costs.clear();
  *total_cost = 0;
  for (int64_t e = 0; e < (int64_t)heads.size(); ++e) {
    const RowSet &rows = *heads[(size_t)e].rows;
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t r0 = rows.begin[(size_t)b], r1 = r0; r0 < rows.begin[(size_t)b + 1]; r0 = r1) {
        r1 = query_chunk_end(rows.pos.data(), r0, rows.begin[(size_t)b + 1], chunk_rows);
        const int64_t span = rows.pos[(size_t)r1 - 1] + 1 - first_visible_key(rows.pos[(size_t)r0], s.window);
        listed.push_back({e, b, r0, r1});
        costs.push_back(cost(r1 - r0, span));
        *total_cost += costs.back();
      }
  }
  order.resize(listed.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  // std::sort with the index as tie-break orders as a stable sort would, without its temporary buffer.
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return costs[a] > costs[b] || (costs[a] == costs[b] && a < b);
  });
  chunks.clear();
  for (size_t i : order) chunks.push_back(listed[i]);
}

// The calling thread's chunk list for query_chunks, kept so that a call allocates nothing.
inline std::vector<QueryChunk> &kept_query_chunks() {
  thread_local std::vector<QueryChunk> chunks;
  return chunks;
}

// The backward's tasks: b * Hkv + g for every sequence b and kv head g some listed head reads, with the listed heads
// of each kv head (in list order, so every sum over them has one order) and the rows listed in all.
struct KvGroupTasks {
  std::vector<std::vector<int64_t>> entries_of;  // [g] for g < Hkv (more may follow, empty): listed heads of g
  std::vector<int64_t> tasks;
  int64_t total_rows = 0;
};

// Fills the calling thread's kept KvGroupTasks (their storage kept between calls) and returns them.
template <typename T>
const KvGroupTasks &kv_group_tasks(const AttentionDims &s, const std::vector<QueryHead<T>> &heads) {
  thread_local KvGroupTasks t;
  // Never shrunk: schemes of different kv-head counts (MoAS branches) alternate, and a shrink would free the lists'
  // storage for the next call to allocate again. Lists past kv_heads stay empty.
  if (t.entries_of.size() < (size_t)s.kv_heads) t.entries_of.resize((size_t)s.kv_heads);
  for (std::vector<int64_t> &entries : t.entries_of) entries.clear();
  t.tasks.clear();
  t.total_rows = 0;
  for (int64_t e = 0; e < (int64_t)heads.size(); ++e) {
    t.entries_of[(size_t)kv_head_of(heads[(size_t)e].head, s.heads / s.kv_heads)].push_back(e);
    t.total_rows += heads[(size_t)e].rows->size();
  }
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t g = 0; g < s.kv_heads; ++g)
      if (!t.entries_of[(size_t)g].empty()) t.tasks.push_back(b * s.kv_heads + g);
  return t;
}

}  // namespace moas
