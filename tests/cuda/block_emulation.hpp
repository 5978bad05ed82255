// Runs a CUDA kernel's block function (cuda/*.cuh) on the host: every block of its grid, one after the other, each on
// fresh shared memory filled with NaN (0xFF bytes: a read of anything the block has not written shows), with the
// block's threads in order or in reverse (a phase whose result depends on the order is a race on the device).
#pragma once

#include <cstring>
#include <vector>

#include "block.cuh"

namespace cuda_test {

// fn(block, shared, x, y, z) for every block of the grid.
template <class HostBlock, class Fn>
void emulate(const moas::cuda::Grid &grid, size_t shared_bytes, bool reverse, Fn &&fn) {
  HostBlock block;
  block.reverse = reverse;
  std::vector<unsigned char> shared(shared_bytes > 0 ? shared_bytes : 1);
  for (int64_t z = 0; z < grid.z; ++z)
    for (int64_t y = 0; y < grid.y; ++y)
      for (int64_t x = 0; x < grid.x; ++x) {
        std::memset(shared.data(), 0xFF, shared.size());
        fn(block, shared.data(), x, y, z);
      }
}

}  // namespace cuda_test
