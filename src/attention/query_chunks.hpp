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

// Chunks of up to `chunk_rows` rows within one band of positions (query_chunk_end), in decreasing cost(rows, span), span being the keys from the first row's window
// start to the last row's position; *total_cost gets the sum.
template <typename T, class Cost>
std::vector<QueryChunk> query_chunks(const AttentionDims &s, const std::vector<QueryHead<T>> &heads,
                                     int64_t chunk_rows, Cost &&cost, int64_t *total_cost) {
  std::vector<QueryChunk> chunks;
  std::vector<int64_t> costs;
  *total_cost = 0;
  for (int64_t e = 0; e < (int64_t)heads.size(); ++e) {
    const RowSet &rows = *heads[(size_t)e].rows;
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t r0 = rows.begin[(size_t)b], r1 = r0; r0 < rows.begin[(size_t)b + 1]; r0 = r1) {
        r1 = query_chunk_end(rows.pos.data(), r0, rows.begin[(size_t)b + 1], chunk_rows);
        const int64_t span = rows.pos[(size_t)r1 - 1] + 1 - first_visible_key(rows.pos[(size_t)r0], s.window);
        chunks.push_back({e, b, r0, r1});
        costs.push_back(cost(r1 - r0, span));
        *total_cost += costs.back();
      }
  }
  std::vector<size_t> order(chunks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  std::vector<QueryChunk> sorted;
  for (size_t i : order) sorted.push_back(chunks[i]);
  return sorted;
}

// The backward's tasks: b * Hkv + g for every sequence b and kv head g some listed head reads, with the listed heads
// of each kv head (in list order, so every sum over them has one order) and the rows listed in all.
struct KvGroupTasks {
  std::vector<std::vector<int64_t>> entries_of;  // [Hkv]: indices into the listed heads
  std::vector<int64_t> tasks;
  int64_t total_rows = 0;
};

template <typename T>
KvGroupTasks kv_group_tasks(const AttentionDims &s, const std::vector<QueryHead<T>> &heads) {
  KvGroupTasks t;
  t.entries_of.resize((size_t)s.kv_heads);
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
