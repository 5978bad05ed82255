// The key/value cache of decoding (SPEC §5): per layer and per cache slot (a MoAS branch, or the layer's one
// scheme) the keys and values of every position so far, only for the kv heads that slot has — so MQA and GQA
// branches cost what their kv heads cost. Positions are absolute; attention reads the cache directly. With a sliding
// window the cache still keeps every position (capacity is at most block_size) and attention skips the old ones.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "attention.hpp"

namespace moas {

template <typename T>
struct LayerCache {
  std::vector<int64_t> width;         // [slot] kv heads x head_dim
  std::vector<std::vector<T>> k, v;   // [slot][batch, capacity, width]
};

template <typename T>
struct KvCache {
  int64_t batch = 0, capacity = 0;
  int64_t length = 0;  // positions filled (the same for every sequence)
  std::vector<LayerCache<T>> layers;

  // Sizes every slot for `batch` sequences of `capacity` positions; widths come from the model's blocks.
  void allocate(int64_t batch_, int64_t capacity_, const std::vector<std::vector<int64_t>> &widths) {
    batch = batch_;
    capacity = capacity_;
    length = 0;
    layers.assign(widths.size(), LayerCache<T>{});
    for (size_t l = 0; l < widths.size(); l++) {
      LayerCache<T> &lc = layers[l];
      lc.width = widths[l];
      for (int64_t w : lc.width) {
        lc.k.emplace_back((size_t)(batch * capacity * w), T(0));
        lc.v.emplace_back((size_t)(batch * capacity * w), T(0));
      }
    }
  }

  // Bytes of keys and values one position costs, over every layer and slot (per sequence).
  uint64_t bytes_per_token() const {
    uint64_t total = 0;
    for (const LayerCache<T> &lc : layers)
      for (int64_t w : lc.width) total += 2 * (uint64_t)w * sizeof(T);
    return total;
  }
};

// Copies the keys and values of n_new positions per sequence (rows b * n_new + t of k and v, row strides k_stride,
// v_stride) into slot `slot` at positions past .. past + n_new - 1.
template <typename T>
void cache_write(LayerCache<T> &lc, int64_t slot, int64_t capacity, const T *k, int64_t k_stride, const T *v,
                 int64_t v_stride, int64_t batch, int64_t n_new, int64_t past) {
  const int64_t w = lc.width[(size_t)slot];
  for (int64_t b = 0; b < batch; b++)
    for (int64_t t = 0; t < n_new; t++) {
      const int64_t row = b * n_new + t, at = (b * capacity + past + t) * w;
      std::memcpy(lc.k[(size_t)slot].data() + at, k + row * k_stride, (size_t)w * sizeof(T));
      std::memcpy(lc.v[(size_t)slot].data() + at, v + row * v_stride, (size_t)w * sizeof(T));
    }
}

// Attention's view of slot `slot`: sequence b's position j at row b * capacity + j.
template <typename T>
KeyValues<T> cached_key_values(LayerCache<T> &lc, int64_t slot, int64_t capacity) {
  const int64_t w = lc.width[(size_t)slot];
  return {lc.k[(size_t)slot].data(), w, lc.v[(size_t)slot].data(), w, capacity};
}

}  // namespace moas
