// How a kernel body is written once and run both on the GPU and on the host. A block function (a MOAS_HD template
// on the Block type) splits its work into phases: block.each(f) runs f(t) for every thread t of the block and then
// waits for all of them. On the device that is f(threadIdx.x) followed by __syncthreads(); on the host (the tests,
// where no GPU exists) a loop over t. So the host tests execute the kernels' own indexing, tiling and arithmetic,
// under the sanitizers too.
//
// The rules that make both readings agree: code outside each() is uniform (every thread computes the same values
// from the same inputs, and it never writes); state that lives from one phase to the next is in shared memory,
// indexed by t; a phase reads only what earlier phases wrote, or what thread t itself writes in this phase.
// Nothing here includes a CUDA header: the host tests compile these files with the C++ compiler.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/hd.hpp"

namespace moas {
namespace cuda {

// A block on the GPU (kernels only: each() is empty in host code).
template <int Threads>
struct DeviceBlock {
  static constexpr int kThreads = Threads;
  template <class F>
  MOAS_HD void each(F &&f) const {
#if defined(__CUDA_ARCH__)
    f((int)threadIdx.x);
    __syncthreads();
#else
    (void)f;
#endif
  }
};

// The same block emulated on the host, one thread after the other. Tests run both orders: a phase whose result
// depends on the order of its threads (a race on the device) gives different results.
template <int Threads>
struct HostBlock {
  static constexpr int kThreads = Threads;
  bool reverse = false;
  template <class F>
  void each(F &&f) const {
    for (int i = 0; i < Threads; ++i) f(reverse ? Threads - 1 - i : i);
  }
};

// Carves typed arrays out of one block's shared memory, each `align`-byte aligned (16 by default; the tensor-core
// kernels ask for 32). With a null base it only counts: the launcher sizes the dynamic shared memory with the same
// carve the kernel uses.
struct SharedArena {
  unsigned char *base;
  size_t used = 0;
  size_t align = 16;

  template <typename T>
  MOAS_HD T *take(int64_t n) {
    const size_t at = used;
    used = (at + (size_t)n * sizeof(T) + align - 1) / align * align;
    return base ? reinterpret_cast<T *>(base + at) : nullptr;
  }
};

MOAS_HD inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
MOAS_HD inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A launch's grid of blocks; each block function says what its x, y and z index.
struct Grid {
  int64_t x, y, z;
};

// part[0] = the sum of part[0, Threads), each thread having written its own entry: a tree of fixed shape (the upper
// half added onto the lower, halving), so the same inputs give the same bits on every run and in either thread order.
// The other entries are overwritten. A later phase reads part[0]; reductions whose results are read together use
// separate arrays (a thread could still be reading part[0] when another starts the next reduction).
template <class Block, typename V>
MOAS_HD void block_sum(const Block &block, V *part) {
  static_assert((Block::kThreads & (Block::kThreads - 1)) == 0, "block_sum needs a power-of-two block");
  for (int half = Block::kThreads / 2; half > 0; half /= 2)
    block.each([&](int t) {
      if (t < half) part[t] += part[t + half];
    });
}

// part[0] = the largest of part[0, Threads), as block_sum.
template <class Block, typename V>
MOAS_HD void block_max(const Block &block, V *part) {
  static_assert((Block::kThreads & (Block::kThreads - 1)) == 0, "block_max needs a power-of-two block");
  for (int half = Block::kThreads / 2; half > 0; half /= 2)
    block.each([&](int t) {
      if (t < half && part[t + half] > part[t]) part[t] = part[t + half];
    });
}

}  // namespace cuda
}  // namespace moas
