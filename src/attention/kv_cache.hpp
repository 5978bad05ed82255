// The key/value cache of decoding (SPEC §5): per layer and per cache slot (a MoAS branch, or the layer's one
// scheme) the keys and values of the positions attention can still read, only for the kv heads that slot has — so
// MQA and GQA branches cost what their kv heads cost. Attention reads the cache in place, through KeyValues whose
// first_key is the absolute position of buffer row 0.
//
// Without a window every position stays: `capacity` rows per sequence, allocated up front. With a sliding window w
// (SPEC §7, §8 "a ring buffer when a window is set") a new position's query sees no key more than w positions back,
// so only the last w positions need to stay: the buffer is a linear one of 2 w + chunk rows (chunk: the most
// positions one forward has appended), and when a forward's positions would run past its end the last w are first
// moved to its front. Moves happen once every w + chunk positions or so and each moves w rows, so they cost O(1)
// rows per position amortised, while attention keeps reading keys as one contiguous run (no wrap inside a tile).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "attention/attention.hpp"
#include "base/error.hpp"

namespace moas {

// One layer's buffers in host memory (KvCacheOf's Layer; cuda_kv_cache.hpp holds the device twin).
template <typename T>
struct LayerCache {
  using Scalar = T;
  std::vector<int64_t> width;        // [slot] kv heads x head_dim
  std::vector<std::vector<T>> k, v;  // [slot][batch, rows, width]
  int64_t batch = 0;
  int64_t rows = 0;       // buffer rows per sequence
  int64_t first_key = 0;  // absolute position held in row 0 of every sequence

  // Resizes every slot to `rows_` rows per sequence, keeping the `kept` positions before `length` at the front
  // (first_key = length - kept). Strong guarantee: built aside, so a failed allocation leaves the layer as it was.
  void rebuild(int64_t rows_, int64_t length, int64_t kept) {
    std::vector<std::vector<T>> k_new, v_new;
    for (size_t s = 0; s < width.size(); s++) {
      k_new.emplace_back((size_t)(batch * rows_ * width[s]), T(0));
      v_new.emplace_back((size_t)(batch * rows_ * width[s]), T(0));
    }
    if (kept > 0) move_to_front(k_new, v_new, rows_, length, kept);
    k.swap(k_new);
    v.swap(v_new);
    rows = rows_;
    first_key = length - kept;
  }

  // In place: the `kept` positions before `length` to rows 0 .. kept - 1 (first_key = length - kept).
  void move_to_front(int64_t length, int64_t kept) {
    move_to_front(k, v, rows, length, kept);
    first_key = length - kept;
  }

 private:
  // Copies positions length - kept .. length - 1 of every sequence to rows 0 .. kept - 1 of `k_to`, `v_to` (which
  // may be k and v themselves: the source rows never lie before the destination rows).
  void move_to_front(std::vector<std::vector<T>> &k_to, std::vector<std::vector<T>> &v_to, int64_t rows_to,
                     int64_t length, int64_t kept) {
    const int64_t from = length - kept - first_key;
    for (size_t s = 0; s < width.size(); s++) {
      const int64_t w = width[s];
      const size_t bytes = (size_t)(kept * w) * sizeof(T);
      for (int64_t b = 0; b < batch; b++) {
        std::memmove(k_to[s].data() + b * rows_to * w, k[s].data() + (b * rows + from) * w, bytes);
        std::memmove(v_to[s].data() + b * rows_to * w, v[s].data() + (b * rows + from) * w, bytes);
      }
    }
  }
};

// The positions and ring rules of a cache whose layers are `Layer`s (LayerCache<T> here, DeviceLayerCache in
// cuda_kv_cache.hpp): written once, so host and device caches hold the same positions in the same rows.
template <typename Layer>
struct KvCacheOf {
  using T = typename Layer::Scalar;
  int64_t batch = 0, capacity = 0;  // capacity: positions per sequence in total (at most block_size)
  int64_t window = 0;               // the model's sliding window; 0 = every position stays
  int64_t length = 0;               // positions filled (the same for every sequence)
  std::vector<Layer> layers;

  // An empty cache for `batch` sequences of up to `capacity` positions; slot widths come from the model's blocks,
  // each layer is made from `layer_args`. With a window it starts with the rows a decode step needs (2 w + 1); a
  // longer prefill grows it.
  template <typename... LayerArgs>
  void allocate(int64_t batch_, int64_t capacity_, int64_t window_, const std::vector<std::vector<int64_t>> &widths,
                const LayerArgs &...layer_args) {
    batch = batch_;
    capacity = capacity_;
    window = window_;
    length = 0;
    layers.clear();
    layers.reserve(widths.size());
    for (const std::vector<int64_t> &width : widths) {
      Layer &layer = layers.emplace_back(layer_args...);
      layer.width = width;
      layer.batch = batch;
      layer.rebuild(rows_for(1), 0, 0);
    }
  }

  // Forgets every position; the memory stays allocated.
  void reset() {
    length = 0;
    for (Layer &lc : layers) lc.first_key = 0;
  }

  // Before a forward appends n_new positions per sequence: makes every layer hold the positions their queries can
  // see (all of them, or the last w) followed by n_new free rows. Positions and their keys are unchanged, only where
  // they sit in the buffer, so this is invisible to attention even if the forward then fails.
  void make_room(int64_t n_new) {
    MOAS_REQUIRE(n_new >= 1 && length + n_new <= capacity, MOAS_ERR_CONTEXT_FULL,
                 "the cache holds " + std::to_string(length) + " of " + std::to_string(capacity) +
                 " positions and cannot take " + std::to_string(n_new) + " more");
    const int64_t kept = window > 0 ? std::min(length, window) : length;
    for (Layer &lc : layers) {
      if (length + n_new <= lc.first_key + lc.rows) continue;  // fits after what is there
      if (kept + n_new > lc.rows) lc.rebuild(rows_for(n_new), length, kept);
      else lc.move_to_front(length, kept);
    }
  }

  // Bytes of keys and values one position costs, over every layer and slot (per sequence).
  uint64_t bytes_per_token() const {
    uint64_t total = 0;
    for (const Layer &lc : layers)
      for (int64_t w : lc.width) total += 2 * (uint64_t)w * sizeof(T);
    return total;
  }

  // Bytes the buffers occupy: batch x rows x bytes_per_token, rows O(w + chunk) with a window, else capacity.
  uint64_t allocated_bytes() const {
    uint64_t total = 0;
    for (const Layer &lc : layers)
      for (int64_t w : lc.width) total += 2 * (uint64_t)(lc.batch * lc.rows * w) * sizeof(T);
    return total;
  }

 private:
  // Rows per sequence for forwards of up to `chunk` positions: the w kept, the chunk, and w more so that moves stay
  // w + chunk positions apart. Never more than capacity (a buffer of capacity rows never has to move).
  int64_t rows_for(int64_t chunk) const { return window > 0 ? std::min(capacity, 2 * window + chunk) : capacity; }
};

template <typename T>
using KvCache = KvCacheOf<LayerCache<T>>;

// Copies the keys and values of n_new positions per sequence (rows b * n_new + t of k and v, row strides k_stride,
// v_stride) into slot `slot` at positions past .. past + n_new - 1 (KvCache::make_room has made room for them).
template <typename T>
void cache_write(LayerCache<T> &lc, int64_t slot, const T *k, int64_t k_stride, const T *v, int64_t v_stride,
                 int64_t batch, int64_t n_new, int64_t past) {
  const int64_t w = lc.width[(size_t)slot];
  for (int64_t b = 0; b < batch; b++)
    for (int64_t t = 0; t < n_new; t++) {
      const int64_t row = b * n_new + t, at = (b * lc.rows + past - lc.first_key + t) * w;
      std::memcpy(lc.k[(size_t)slot].data() + at, k + row * k_stride, (size_t)w * sizeof(T));
      std::memcpy(lc.v[(size_t)slot].data() + at, v + row * v_stride, (size_t)w * sizeof(T));
    }
}

// Attention's view of slot `slot`: sequence b's position j at row b * rows + j - first_key.
template <typename T>
KeyValues<T> cached_key_values(LayerCache<T> &lc, int64_t slot) {
  const int64_t w = lc.width[(size_t)slot];
  return {lc.k[(size_t)slot].data(), w, lc.v[(size_t)slot].data(), w, lc.rows, lc.first_key};
}

}  // namespace moas
