#include "cuda_host/cuda_kv_cache.hpp"

#include <algorithm>

namespace moas {

namespace {

// Rows [from, from + n) of every sequence of a [batch, rows_from, w] buffer to rows [0, n) of a [batch, rows_to, w]
// one: a 2-D copy, one sequence a row.
void copy_front(const moas_cuda_backend &t, float *to, int64_t rows_to, const float *src, int64_t rows_from,
                int64_t from, int64_t n, int64_t w, int64_t batch) {
  device_check(t, t.copy_rows(to, rows_to * w, src + from * w, rows_from * w, n * w, batch, nullptr), "copy_rows");
}

}  // namespace

// Built aside, as LayerCache::rebuild, so a failed allocation leaves the layer as it was. Zeroed like the host's
// buffers, so the rows no position holds yet are never garbage a kernel could read.
void DeviceLayerCache::rebuild(int64_t rows_, int64_t length, int64_t kept) {
  std::vector<DeviceArray<float>> k_new(width.size()), v_new(width.size());
  const int64_t from = length - kept - first_key;
  for (size_t s = 0; s < width.size(); s++) {
    const int64_t n = batch * rows_ * width[s];
    for (DeviceArray<float> *buf : {&k_new[s], &v_new[s]}) {
      buf->reserve(*table, n);
      buf->zero(n);
    }
    if (kept > 0) {
      copy_front(*table, k_new[s].get(), rows_, k[s].get(), rows, from, kept, width[s], batch);
      copy_front(*table, v_new[s].get(), rows_, v[s].get(), rows, from, kept, width[s], batch);
    }
  }
  k.swap(k_new);
  v.swap(v_new);
  rows = rows_;
  first_key = length - kept;
}

// The host moves with memmove; copy_rows must not overlap, so when the kept rows overlap their destination (from <
// kept) they go in steps of at most `from` rows, front first: each step reads rows no earlier step has written.
void DeviceLayerCache::move_to_front(int64_t length, int64_t kept) {
  const int64_t from = length - kept - first_key;
  if (from > 0)
    for (size_t s = 0; s < width.size(); s++)
      for (DeviceArray<float> *buf : {&k[s], &v[s]})
        for (int64_t done = 0; done < kept; done += from)
          copy_front(*table, buf->get() + done * width[s], rows, buf->get(), rows, from + done,
                     std::min(from, kept - done), width[s], batch);
  first_key = length - kept;
}

// Sequence b's new rows are contiguous in the cache but b * rows apart: one 2-D copy per sequence and buffer.
void cache_write(DeviceLayerCache &lc, int64_t slot, const float *k, int64_t k_stride, const float *v,
                 int64_t v_stride, int64_t batch, int64_t n_new, int64_t past) {
  const int64_t w = lc.width[(size_t)slot];
  const moas_cuda_backend &t = *lc.table;
  for (int64_t b = 0; b < batch; b++) {
    const int64_t at = (b * lc.rows + past - lc.first_key) * w;
    device_check(t, t.copy_rows(lc.k[(size_t)slot].get() + at, w, k + b * n_new * k_stride, k_stride, w, n_new,
                                nullptr),
                 "copy_rows");
    device_check(t, t.copy_rows(lc.v[(size_t)slot].get() + at, w, v + b * n_new * v_stride, v_stride, w, n_new,
                                nullptr),
                 "copy_rows");
  }
}

moas_cuda_key_values cached_key_values(const DeviceLayerCache &lc, int64_t slot) {
  const int64_t w = lc.width[(size_t)slot];
  return {lc.k[(size_t)slot].get(), w, lc.v[(size_t)slot].get(), w, lc.rows, lc.first_key};
}

}  // namespace moas
