// Mean cross-entropy over rows whose target is not -1, fused with the softmax.
#pragma once

#include <cmath>
#include <cstdint>

#include "base/fast_math.hpp"
#include "base/parallel.hpp"

namespace moas {

// Returns the mean loss (0 when no row has a target); lse [N] keeps each row's log-sum-exp for backward.
template <typename T>
double cross_entropy_forward(T *lse, const T *logits, const int32_t *targets, int64_t N, int64_t V,
                             int64_t *n_counted) {
  double total = 0;
  int64_t count = 0;
  // Row losses are summed in row order after the parallel part so the mean is thread-count independent.
  parallel_for(N, N * V >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      const T *row = logits + n * V;
      T mx = row[0];
      for (int64_t v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
      T sum = 0;
      for (int64_t v = 0; v < V; v++) sum += fast_exp(row[v] - mx);
      lse[n] = mx + std::log(sum);
    }
  });
  if (targets) {
    for (int64_t n = 0; n < N; n++) {
      if (targets[n] < 0) continue;
      total += (double)(lse[n] - logits[n * V + targets[n]]);
      count++;
    }
  }
  *n_counted = count;
  return count ? total / (double)count : 0.0;
}

// dlogits (overwritten) = (softmax - onehot) * scale on rows with a target, 0 elsewhere.
template <typename T>
void cross_entropy_backward(T *dlogits, const T *logits, const T *lse, const int32_t *targets, int64_t N, int64_t V,
                            T scale) {
  parallel_for(N, N * V >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      T *d = dlogits + n * V;
      if (targets[n] < 0) {
        for (int64_t v = 0; v < V; v++) d[v] = 0;
        continue;
      }
      const T *row = logits + n * V;
      for (int64_t v = 0; v < V; v++) d[v] = fast_exp(row[v] - lse[n]) * scale;
      d[targets[n]] -= scale;
    }
  });
}

}  // namespace moas
