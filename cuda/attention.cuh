// Causal scaled-dot-product attention on the GPU, fp32, flash style (the CUDA twin of src/attention/attention.cpp, same
// semantics and the same per-row arithmetic from src/attention/attention_math.hpp): every query head brings its own compact rows
// (all tokens for dense heads, the routed ones for MoAS top-1 branches and MoH heads), the causal mask comes from
// each row's position, a sliding window limits how far back a row sees, and GQA/MQA heads read their group's kv head
// without expanding it. Memory is O(tile * head_dim) per block, never O(T^2).
//
// One thread owns one query row (forward, dq) or one key (dk/dv), so the shared helpers run as they do on the CPU:
// online_softmax_update over a row's scores of one key tile, visible_keys for the causal/window mask, kv_head_of for
// the head map, key_tile_start / query_chunk_end for the tiling. Three block functions, each run by a kernel in
// attention.cu and by the host tests:
//   forward: one block per (band of kQueryTile positions, listed head, sequence): the head's rows in that band (all
//            of them for a dense head, fewer for a routed one, which then does only its causal triangle's work, as
//            on the CPU) give their out rows and log-sum-exp;
//   dq:      the same grid, P recomputed from lse, D = rowsum(dO o O);
//   dk/dv:   one block per (key tile, kv head, sequence), looping over the listed heads of that kv head in list order
//            and over their rows in order, so each sum has one fixed order (deterministic, no atomics).
// Keys may start at a position first_key > 0 (a windowed KV cache) in the forward; the backward needs every key.
// Dropout on the probabilities is the CPU's: after normalisation, mask / (1 - p) from the same counter-based bits
// (src/ops/dropout.hpp), element ((b H + h) seq + pos) seq + key.
#pragma once

#include <cmath>
#include <cstdint>

#include "attention/attention_math.hpp"
#include "base/fast_math.hpp"
#include "block.cuh"
#include "cuda_host/cuda_backend.h"
#include "ops/dropout.hpp"

namespace moas {
namespace cuda {

constexpr int kAttentionThreads = 32;
constexpr int64_t kQueryTile = kAttentionThreads;  // the band of positions of a forward/dq block or dk/dv chunk
constexpr int64_t kKeyTile = kAttentionThreads;    // keys per tile, and per dk/dv block
static_assert(kQueryTile <= kAttentionThreads && kKeyTile <= kAttentionThreads, "one thread per row and per key");
using AttentionDeviceBlock = DeviceBlock<kAttentionThreads>;
using AttentionHostBlock = HostBlock<kAttentionThreads>;

struct AttentionArgs {
  moas_cuda_attention_dims dims;
  moas_cuda_key_values kv;
  const moas_cuda_query_head *heads;       // [n_heads]
  const moas_cuda_query_head_grad *grads;  // [n_heads], backward only
  int64_t n_heads;
  moas_cuda_key_value_grads dkv;  // backward only
  float scale;                    // 1 / sqrt(head_dim), computed on the host as the CPU kernel does
  Dropout dropout;                // on the probabilities; inactive (p = 0) without
  float keep_scale;               // 1 / (1 - p), as the CPU computes it
};

// The arguments of a launch (grads, dkv: backward only; dropout may be null).
inline AttentionArgs attention_args(const moas_cuda_attention_dims &dims, const moas_cuda_key_values &kv,
                                    const moas_cuda_query_head *heads, const moas_cuda_query_head_grad *grads,
                                    int64_t n_heads, const moas_cuda_key_value_grads *dkv,
                                    const moas_cuda_dropout *dropout) {
  AttentionArgs a{};
  a.dims = dims;
  a.kv = kv;
  a.heads = heads;
  a.grads = grads;
  a.n_heads = n_heads;
  if (dkv) a.dkv = *dkv;
  a.scale = 1.0f / std::sqrt((float)dims.head_dim);
  if (dropout) a.dropout = Dropout{dropout->p, dropout->key};
  a.keep_scale = a.dropout.active() ? 1.0f / (1.0f - a.dropout.p) : 1.0f;
  return a;
}

// The dropout element of query row `pos` of head h in sequence b against key j0 (add the key's offset from j0).
MOAS_HD inline uint64_t attention_dropout_element(const AttentionArgs &a, int64_t b, int64_t h, int64_t pos,
                                                  int64_t j0) {
  return (uint64_t)(((b * a.dims.heads + h) * a.dims.seq + pos) * a.dims.seq + j0);
}

// The multiplier of a kept or dropped probability: keep_scale or 0 (1 without dropout).
MOAS_HD inline float dropout_multiplier(const AttentionArgs &a, uint64_t element) {
  return !a.dropout.active() || a.dropout.keep(element) ? a.keep_scale : 0.0f;
}

// Grids: forward and dq blocks are (position band, listed head, sequence), dk/dv blocks (key tile, kv head,
// sequence).
inline Grid query_grid(const AttentionArgs &a) { return {ceil_div(a.dims.seq, kQueryTile), a.n_heads, a.dims.batch}; }
inline Grid key_grid(const AttentionArgs &a) { return {ceil_div(a.dims.seq, kKeyTile), a.dims.kv_heads, a.dims.batch}; }

// Row-major [rows, d] blocks that one thread per row walks along are padded to d + 1 floats per row, so the 32
// threads of a warp reading column i of their rows hit 32 different banks. Arrays that every thread reads at the same
// address (a broadcast) are not padded.
struct ForwardShared {
  float *q, *acc, *k, *v, *s, *m, *l;  // q, acc [Tq, d+1]; k, v [Tk, d]; s [Tq, Tk+1]; m, l [Tq]
  int32_t *pos;                        // [Tq]
};
MOAS_HD inline ForwardShared forward_shared(SharedArena &arena, int64_t d) {
  ForwardShared sh;
  sh.q = arena.take<float>(kQueryTile * (d + 1));
  sh.acc = arena.take<float>(kQueryTile * (d + 1));
  sh.k = arena.take<float>(kKeyTile * d);
  sh.v = arena.take<float>(kKeyTile * d);
  sh.s = arena.take<float>(kQueryTile * (kKeyTile + 1));
  sh.m = arena.take<float>(kQueryTile);
  sh.l = arena.take<float>(kQueryTile);
  sh.pos = arena.take<int32_t>(kQueryTile);
  return sh;
}

struct DqShared {
  float *q, *dout, *dq, *k, *v, *ds, *D, *lse;  // q, dout, dq [Tq, d+1]; k, v [Tk, d]; ds [Tq, Tk+1]; D, lse [Tq]
  int32_t *pos;                                 // [Tq]
};
MOAS_HD inline DqShared dq_shared(SharedArena &arena, int64_t d) {
  DqShared sh;
  sh.q = arena.take<float>(kQueryTile * (d + 1));
  sh.dout = arena.take<float>(kQueryTile * (d + 1));
  sh.dq = arena.take<float>(kQueryTile * (d + 1));
  sh.k = arena.take<float>(kKeyTile * d);
  sh.v = arena.take<float>(kKeyTile * d);
  sh.ds = arena.take<float>(kQueryTile * (kKeyTile + 1));
  sh.D = arena.take<float>(kQueryTile);
  sh.lse = arena.take<float>(kQueryTile);
  sh.pos = arena.take<int32_t>(kQueryTile);
  return sh;
}

struct DkdvShared {
  float *k, *v, *dk, *dv, *q, *dout, *D, *lse;  // k, v, dk, dv [Tk, d+1] (one key per thread); q, dout [Tq, d]
  int32_t *pos;                                 // [Tq]
};
MOAS_HD inline DkdvShared dkdv_shared(SharedArena &arena, int64_t d) {
  DkdvShared sh;
  sh.k = arena.take<float>(kKeyTile * (d + 1));
  sh.v = arena.take<float>(kKeyTile * (d + 1));
  sh.dk = arena.take<float>(kKeyTile * (d + 1));
  sh.dv = arena.take<float>(kKeyTile * (d + 1));
  sh.q = arena.take<float>(kQueryTile * d);
  sh.dout = arena.take<float>(kQueryTile * d);
  sh.D = arena.take<float>(kQueryTile);
  sh.lse = arena.take<float>(kQueryTile);
  sh.pos = arena.take<int32_t>(kQueryTile);
  return sh;
}

// Dynamic shared memory of each block function, from the same carve the kernels use.
inline size_t forward_shared_bytes(int64_t d) {
  SharedArena arena{nullptr};
  forward_shared(arena, d);
  return arena.used;
}
inline size_t dq_shared_bytes(int64_t d) {
  SharedArena arena{nullptr};
  dq_shared(arena, d);
  return arena.used;
}
inline size_t dkdv_shared_bytes(int64_t d) {
  SharedArena arena{nullptr};
  dkdv_shared(arena, d);
  return arena.used;
}

MOAS_HD inline float dot(const float *a, const float *b, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// The first compact row of [lo, hi) at position >= p (hi when none); rows are in position order.
MOAS_HD inline int64_t first_row_at(const int32_t *pos, int64_t lo, int64_t hi, int64_t p) {
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (pos[mid] < p)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// The compact rows [*r0, *r1) of sequence b of a head whose positions lie in band `band` (band * tile ..
// + tile - 1): the query chunk query_chunk_end gives on the CPU. False when the band holds no row.
MOAS_HD inline bool band_rows(const moas_cuda_query_head &qh, int64_t b, int64_t band, int64_t *r0, int64_t *r1,
                              int64_t tile = kQueryTile) {
  const int64_t end = qh.begin[b + 1];
  *r0 = first_row_at(qh.pos, qh.begin[b], end, band * tile);
  if (*r0 >= end || qh.pos[*r0] >= (band + 1) * tile) return false;
  *r1 = query_chunk_end(qh.pos, *r0, end, tile);
  return true;
}

// Whether a listed head reads kv head g: one nobody reads keeps its dk/dv untouched, as on the CPU.
MOAS_HD inline bool kv_head_read(const AttentionArgs &a, int64_t g) {
  for (int64_t e = 0; e < a.n_heads; ++e)
    if (kv_head_of(a.heads[e].head, a.dims.heads / a.dims.kv_heads) == g) return true;
  return false;
}

// f(j0, nk) for each tile of `tile` keys that rows at positions first_pos .. last may see, in order: from the tile
// holding the first row's earliest visible key (or the cache's first key) to the one holding `last`.
template <class F>
MOAS_HD void for_each_key_tile(const AttentionArgs &a, int64_t first_pos, int64_t last, int64_t tile, F &&f) {
  for (int64_t j0 = key_tile_start(first_visible_key(first_pos, a.dims.window), a.kv.first_key, tile); j0 <= last;
       j0 += tile)
    f(j0, min_i64(tile, last + 1 - j0));
}

// f(entry, r0, mq) for each chunk of query rows (one band of `rows` positions) of sequence b that can see a key of
// the tile [j0, j0 + keys), over the listed heads reading kv head `kv_head`, in list order then row order: the fixed
// order of the dk/dv sums.
template <class F>
MOAS_HD void for_each_chunk_seeing(const AttentionArgs &a, int64_t b, int64_t kv_head, int64_t j0, int64_t keys,
                                   int64_t rows, F &&f) {
  const int64_t group = a.dims.heads / a.dims.kv_heads;
  for (int64_t e = 0; e < a.n_heads; ++e) {
    const moas_cuda_query_head &qh = a.heads[e];
    if (kv_head_of(qh.head, group) != kv_head) continue;
    const int64_t rows_begin = qh.begin[b], rows_end = qh.begin[b + 1];
    for (int64_t r0 = rows_begin, r1 = rows_begin; r0 < rows_end; r0 = r1) {
      r1 = query_chunk_end(qh.pos, r0, rows_end, rows);
      // The whole chunk precedes this key tile, or its windows all start after it.
      if (qh.pos[r1 - 1] < j0 || first_visible_key(qh.pos[r0], a.dims.window) >= j0 + keys) continue;
      f(e, r0, r1 - r0);
    }
  }
}

// Copies keys and values j0 .. j0 + nk - 1 of kv head g of sequence b into k, v [nk, d] (thread t of T takes every
// T-th element, so a warp reads consecutive addresses).
MOAS_HD inline void load_key_tile(int t, int threads, const moas_cuda_key_values &kv, int64_t b, int64_t g, int64_t j0,
                                  int64_t nk, int64_t d, float *k, float *v) {
  for (int64_t e = t; e < nk * d; e += threads) {
    const int64_t c = e / d, i = e % d, key = b * kv.seq_stride + j0 + c - kv.first_key;
    k[e] = kv.k[key * kv.k_stride + g * d + i];
    v[e] = kv.v[key * kv.v_stride + g * d + i];
  }
}

// Copies compact rows r0 .. r0 + mq - 1 of src (row stride src_stride) into dst [mq, dst_stride].
MOAS_HD inline void load_rows(int t, int threads, const float *src, int64_t src_stride, int64_t r0, int64_t mq,
                              int64_t d, float *dst, int64_t dst_stride) {
  for (int64_t e = t; e < mq * d; e += threads) {
    const int64_t r = e / d, i = e % d;
    dst[r * dst_stride + i] = src[(r0 + r) * src_stride + i];
  }
}

// One query row against one key tile: its scaled scores on the visible columns [lo, hi), the online-softmax update,
// dropout of the probabilities (after the normaliser took them, as on the CPU; element e0 + c), then
// acc = acc * alpha + sum_c p_c v_c.
MOAS_HD inline void forward_row_tile(const AttentionArgs &a, const float *q, const float *k, const float *v, int64_t d,
                                     int64_t nk, int64_t lo, int64_t hi, uint64_t e0, float *s, float &m, float &l,
                                     float *acc) {
  for (int64_t c = lo; c < hi; ++c) s[c] = a.scale * dot(q, k + c * d, d);
  const float alpha = online_softmax_update(s, lo, hi, nk, m, l);
  if (a.dropout.active())
    for (int64_t c = lo; c < hi; ++c) s[c] *= dropout_multiplier(a, e0 + (uint64_t)c);
  for (int64_t i = 0; i < d; ++i) {
    float sum = acc[i] * alpha;
    for (int64_t c = lo; c < hi; ++c) sum += s[c] * v[c * d + i];
    acc[i] = sum;
  }
}

template <class Block>
MOAS_HD void attention_forward_block(const Block &block, const AttentionArgs &a, unsigned char *shared, int64_t band,
                                     int64_t entry, int64_t b) {
  constexpr int T = Block::kThreads;
  const moas_cuda_query_head &qh = a.heads[entry];
  const int64_t d = a.dims.head_dim, w = a.dims.window;
  const int64_t g = kv_head_of(qh.head, a.dims.heads / a.dims.kv_heads);
  int64_t r0, r1;
  if (!band_rows(qh, b, band, &r0, &r1)) return;
  const int64_t mq = r1 - r0, last = qh.pos[r1 - 1];
  SharedArena arena{shared};
  const ForwardShared sh = forward_shared(arena, d);

  block.each([&](int t) {
    load_rows(t, T, qh.q, qh.q_stride, r0, mq, d, sh.q, d + 1);
    if (t < mq) {
      sh.pos[t] = qh.pos[r0 + t];
      sh.m[t] = negative_infinity<float>();
      sh.l[t] = 0.0f;
      for (int64_t i = 0; i < d; ++i) sh.acc[t * (d + 1) + i] = 0.0f;
    }
  });
  // Rows are in position order: the first row's window starts earliest, the last row sees furthest.
  for_each_key_tile(a, qh.pos[r0], last, kKeyTile, [&](int64_t j0, int64_t nk) {
    block.each([&](int t) { load_key_tile(t, T, a.kv, b, g, j0, nk, d, sh.k, sh.v); });
    block.each([&](int t) {
      if (t >= mq) return;
      int64_t lo, hi;
      visible_keys(sh.pos[t], w, j0, nk, &lo, &hi);
      forward_row_tile(a, sh.q + t * (d + 1), sh.k, sh.v, d, nk, lo, hi,
                       attention_dropout_element(a, b, qh.head, sh.pos[t], j0), sh.s + t * (kKeyTile + 1), sh.m[t],
                       sh.l[t], sh.acc + t * (d + 1));
    });
  });
  block.each([&](int t) {
    if (t >= mq) return;
    const float inv = 1.0f / sh.l[t];
    float *out = qh.out + (r0 + t) * qh.out_stride;
    for (int64_t i = 0; i < d; ++i) out[i] = sh.acc[t * (d + 1) + i] * inv;
    qh.lse[r0 + t] = sh.m[t] + logf(sh.l[t]);
  });
}

// FlashAttention-2's backward, per query row i and visible key j: p = exp(s_ij - lse_i), dp = (dO_i . v_j) z_ij,
// ds = p (dp - D_i) with D_i = dO_i . O_i and z the dropout multiplier; then dq_i += scale ds k_j (here, per query
// row), dk_j += scale ds q_i and dv_j += p z dO_i (attention_dkdv_block, per key).
template <class Block>
MOAS_HD void attention_dq_block(const Block &block, const AttentionArgs &a, unsigned char *shared, int64_t band,
                                int64_t entry, int64_t b) {
  constexpr int T = Block::kThreads;
  const moas_cuda_query_head &qh = a.heads[entry];
  const moas_cuda_query_head_grad &gr = a.grads[entry];
  const int64_t d = a.dims.head_dim, w = a.dims.window;
  const int64_t g = kv_head_of(qh.head, a.dims.heads / a.dims.kv_heads);
  int64_t r0, r1;
  if (!band_rows(qh, b, band, &r0, &r1)) return;
  const int64_t mq = r1 - r0, last = qh.pos[r1 - 1];
  SharedArena arena{shared};
  const DqShared sh = dq_shared(arena, d);

  block.each([&](int t) {
    load_rows(t, T, qh.q, qh.q_stride, r0, mq, d, sh.q, d + 1);
    load_rows(t, T, gr.dout, gr.dout_stride, r0, mq, d, sh.dout, d + 1);
    if (t < mq) {
      sh.pos[t] = qh.pos[r0 + t];
      sh.lse[t] = qh.lse[r0 + t];
      sh.D[t] = dot(qh.out + (r0 + t) * qh.out_stride, gr.dout + (r0 + t) * gr.dout_stride, d);
      for (int64_t i = 0; i < d; ++i) sh.dq[t * (d + 1) + i] = 0.0f;
    }
  });
  for_each_key_tile(a, qh.pos[r0], last, kKeyTile, [&](int64_t j0, int64_t nk) {
    block.each([&](int t) { load_key_tile(t, T, a.kv, b, g, j0, nk, d, sh.k, sh.v); });
    block.each([&](int t) {
      if (t >= mq) return;
      int64_t lo, hi;
      visible_keys(sh.pos[t], w, j0, nk, &lo, &hi);
      const float *q = sh.q + t * (d + 1), *dout = sh.dout + t * (d + 1);
      float *ds = sh.ds + t * (kKeyTile + 1), *dq = sh.dq + t * (d + 1);
      const uint64_t e0 = attention_dropout_element(a, b, qh.head, sh.pos[t], j0);
      for (int64_t c = lo; c < hi; ++c) {
        const float p = fast_exp(a.scale * dot(q, sh.k + c * d, d) - sh.lse[t]);
        float dp = dot(dout, sh.v + c * d, d);
        if (a.dropout.active()) dp *= dropout_multiplier(a, e0 + (uint64_t)c);
        ds[c] = p * (dp - sh.D[t]);
      }
      for (int64_t i = 0; i < d; ++i) {
        float sum = 0.0f;
        for (int64_t c = lo; c < hi; ++c) sum += ds[c] * sh.k[c * d + i];
        dq[i] += a.scale * sum;
      }
    });
  });
  block.each([&](int t) {
    if (t >= mq) return;
    float *dq = gr.dq + (r0 + t) * gr.dq_stride;
    for (int64_t i = 0; i < d; ++i) dq[i] = sh.dq[t * (d + 1) + i];
  });
}

template <class Block>
MOAS_HD void attention_dkdv_block(const Block &block, const AttentionArgs &a, unsigned char *shared, int64_t tile,
                                  int64_t g, int64_t b) {
  constexpr int T = Block::kThreads;
  const int64_t d = a.dims.head_dim, w = a.dims.window;
  const int64_t j0 = tile * kKeyTile, nk = min_i64(kKeyTile, a.dims.seq - j0);
  if (!kv_head_read(a, g) || nk <= 0) return;
  SharedArena arena{shared};
  const DkdvShared sh = dkdv_shared(arena, d);
  const moas_cuda_key_values &kv = a.kv;
  const moas_cuda_key_value_grads &dkv = a.dkv;

  block.each([&](int t) {
    if (t >= nk) return;
    const int64_t key = b * kv.seq_stride + j0 + t;
    for (int64_t i = 0; i < d; ++i) {
      sh.k[t * (d + 1) + i] = kv.k[key * kv.k_stride + g * d + i];
      sh.v[t * (d + 1) + i] = kv.v[key * kv.v_stride + g * d + i];
      sh.dk[t * (d + 1) + i] = 0.0f;
      sh.dv[t * (d + 1) + i] = 0.0f;
    }
  });
  for_each_chunk_seeing(a, b, g, j0, kKeyTile, kQueryTile, [&](int64_t e, int64_t r0, int64_t mq) {
    const moas_cuda_query_head &qh = a.heads[e];
    const moas_cuda_query_head_grad &gr = a.grads[e];
    block.each([&](int t) {
      load_rows(t, T, qh.q, qh.q_stride, r0, mq, d, sh.q, d);
      load_rows(t, T, gr.dout, gr.dout_stride, r0, mq, d, sh.dout, d);
      if (t < mq) {
        sh.pos[t] = qh.pos[r0 + t];
        sh.lse[t] = qh.lse[r0 + t];
        sh.D[t] = dot(qh.out + (r0 + t) * qh.out_stride, gr.dout + (r0 + t) * gr.dout_stride, d);
      }
    });
    block.each([&](int t) {
      if (t >= nk) return;
      const float *k = sh.k + t * (d + 1), *v = sh.v + t * (d + 1);
      float *dk = sh.dk + t * (d + 1), *dv = sh.dv + t * (d + 1);
      for (int64_t r = 0; r < mq; ++r) {
        int64_t lo, hi;
        visible_keys(sh.pos[r], w, j0, nk, &lo, &hi);
        if (t < lo || t >= hi) continue;
        const float *q = sh.q + r * d, *dout = sh.dout + r * d;
        const float p = fast_exp(a.scale * dot(q, k, d) - sh.lse[r]);
        float dp = dot(dout, v, d), pz = p;
        if (a.dropout.active()) {
          const float z = dropout_multiplier(a, attention_dropout_element(a, b, qh.head, sh.pos[r], j0 + t));
          dp *= z;
          pz *= z;
        }
        const float ds = p * (dp - sh.D[r]);
        for (int64_t i = 0; i < d; ++i) {
          dv[i] += pz * dout[i];
          dk[i] += a.scale * ds * q[i];
        }
      }
    });
  });
  block.each([&](int t) {
    if (t >= nk) return;
    const int64_t key = b * kv.seq_stride + j0 + t;
    for (int64_t i = 0; i < d; ++i) {
      dkv.dk[key * dkv.dk_stride + g * d + i] = sh.dk[t * (d + 1) + i];
      dkv.dv[key * dkv.dv_stride + g * d + i] = sh.dv[t * (d + 1) + i];
    }
  });
}

// Launchers (attention.cu): check the arguments, size the shared memory, launch, check the launch.
int32_t attention_forward(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                          const moas_cuda_query_head *heads, int64_t n_heads, const moas_cuda_dropout *dropout,
                          void *stream);
int32_t attention_backward(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                           const moas_cuda_query_head *heads, const moas_cuda_query_head_grad *grads, int64_t n_heads,
                           const moas_cuda_key_value_grads *dkv, const moas_cuda_dropout *dropout, void *stream);

// The argument checks of attention_forward (attention.cu), shared with the CoPE launchers.
int32_t check_attention_args(const char *what, const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                             const void *heads, int64_t n_heads);

}  // namespace cuda
}  // namespace moas
