// The KV cache of decoding (kv_cache.hpp) in device memory, for a CudaModel: the same KvCacheOf rules (capacity, the
// windowed ring of 2 w + chunk rows, make_room), with each layer's slots in DeviceArrays moved by the table's
// copy_rows, so a device cache holds every position in the row the host cache would.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/kv_cache.hpp"
#include "cuda_host/cuda_backend.h"
#include "cuda_host/device_array.hpp"

namespace moas {

struct DeviceLayerCache {
  using Scalar = float;
  explicit DeviceLayerCache(const moas_cuda_backend &t) : table(&t) {}

  const moas_cuda_backend *table;
  std::vector<int64_t> width;            // [slot] kv heads x head_dim
  std::vector<DeviceArray<float>> k, v;  // [slot][batch, rows, width]
  int64_t batch = 0;
  int64_t rows = 0;       // buffer rows per sequence
  int64_t first_key = 0;  // absolute position held in row 0 of every sequence

  // LayerCache's rebuild and in-place move_to_front (same rows, same first_key).
  void rebuild(int64_t rows_, int64_t length, int64_t kept);
  void move_to_front(int64_t length, int64_t kept);
};

using CudaKvCache = KvCacheOf<DeviceLayerCache>;

// kv_cache.hpp's cache_write and cached_key_values on device memory: k and v are device rows b * n_new + t.
void cache_write(DeviceLayerCache &lc, int64_t slot, const float *k, int64_t k_stride, const float *v,
                 int64_t v_stride, int64_t batch, int64_t n_new, int64_t past);
moas_cuda_key_values cached_key_values(const DeviceLayerCache &lc, int64_t slot);

}  // namespace moas
