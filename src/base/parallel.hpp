// Threading helpers shared by the ops. Every reduction here has a fixed order that does not depend on the
// thread count, so results are bit-identical whatever n_threads is.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace moas {

// Below this many elements of simple per-element work, a parallel loop runs on the calling thread: waking a thread
// team costs more than the work, and tiny models (tests, decode steps, RustGPT-sized layers) would spend their time
// in barriers — badly so when another process shares the cores.
constexpr int64_t kParallelGrain = 1 << 16;

// Runs region(thread, threads) on a thread team when the work is worth one, else once on the calling thread without
// entering OpenMP at all: a region that an if clause makes serial still allocates its team, and RustGPT-sized calls
// must not allocate.
template <class Region>
void parallel_region(bool worth, Region &&region) {
  if (worth && omp_get_max_threads() > 1) {
#pragma omp parallel
    region(omp_get_thread_num(), omp_get_num_threads());
  } else {
    region(0, 1);
  }
}

// body(begin, end) over [0, n) in one contiguous slice per thread (OpenMP's static schedule), as parallel_region.
template <class Body>
void parallel_for(int64_t n, bool worth, Body &&body) {
  parallel_region(worth,
                  [&](int64_t thread, int64_t threads) { body(n * thread / threads, n * (thread + 1) / threads); });
}

// Sets the OpenMP (and so OpenMP-OpenBLAS) thread count of the calling thread for the lifetime of a model call.
class ThreadScope {
 public:
  explicit ThreadScope(int n_threads) : saved_(omp_get_max_threads()) {
    omp_set_num_threads(n_threads > 0 ? n_threads : omp_get_num_procs());
  }
  ~ThreadScope() { omp_set_num_threads(saved_); }
  ThreadScope(const ThreadScope &) = delete;
  ThreadScope &operator=(const ThreadScope &) = delete;

 private:
  int saved_;
};

// Runs the OpenMP regions of its lifetime on the calling thread when `serial` (oneDNN's and OpenBLAS-OpenMP's
// included: they size their teams by omp_get_max_threads).
class SerialScope {
 public:
  explicit SerialScope(bool serial) : saved_(serial ? omp_get_max_threads() : 0) {
    if (serial) omp_set_num_threads(1);
  }
  ~SerialScope() {
    if (saved_ > 0) omp_set_num_threads(saved_);
  }
  SerialScope(const SerialScope &) = delete;
  SerialScope &operator=(const SerialScope &) = delete;

 private:
  int saved_;
};

// sums[c] += sum_n rows[n * cols + c]: columns are split between threads, rows summed in order.
template <typename T>
void column_sum_accumulate(T *sums, const T *rows, int64_t n_rows, int64_t cols) {
  constexpr int64_t kBlock = 64;
  const int64_t n_blocks = (cols + kBlock - 1) / kBlock;
  parallel_for(n_blocks, n_rows * cols >= kParallelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; blk++) {
      const int64_t c0 = blk * kBlock, c1 = std::min(cols, c0 + kBlock);
      T acc[kBlock] = {};
      for (int64_t n = 0; n < n_rows; n++) {
        const T *row = rows + n * cols;
#pragma omp simd
        for (int64_t c = c0; c < c1; c++) acc[c - c0] += row[c];
      }
      for (int64_t c = c0; c < c1; c++) sums[c] += acc[c - c0];
    }
  });
}

}  // namespace moas
