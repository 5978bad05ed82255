// The attention of attention.cuh on tensor cores, for MOAS_MATMUL_BF16: the same rows, heads, masks, windows,
// dropout elements and tiling rules, but the five products of a tile (S = Q K^T and O += P V forward; dP = dO V^T,
// dQ += dS K, dV += P^T dO, dK += dS^T Q backward) run as block_mma (mma.cuh) on bfloat16 copies of the operands
// with fp32 accumulation, and the softmax between them stays fp32. Blocks are four warps over bands of kTcRows query
// positions and tiles of kTcKeys keys; head_dim is padded to a multiple of 16 with zeros (which add nothing to any
// product). Each operand lives in shared memory as bf16 rows of ld = padded head_dim + 8 (a 16-byte skew between
// rows against bank conflicts, still 32-byte aligned at every 16th row where a WMMA tile starts); scores and
// accumulators are fp32.
//
// Per row the arithmetic is the fp32 kernel's: online_softmax_update on the scaled scores of the visible keys,
// dropout after the normaliser took the probabilities, P recomputed from the log-sum-exp in the backward with
// D = rowsum(dO o O). Sums in a product run in the tensor cores' order, not the CPU's, so results match the CPU
// backend to bfloat16's precision rather than bit for bit; they are deterministic (no atomics, fixed order).
#pragma once

#include <cmath>
#include <cstdint>

#include "attention.cuh"
#include "mma.cuh"

namespace moas {
namespace cuda {

constexpr int kTcThreads = 128;
constexpr int64_t kTcRows = 64;  // query positions per band, and query rows per dk/dv chunk
constexpr int64_t kTcKeys = 64;  // keys per tile, and per dk/dv block
static_assert(kTcRows <= kTcThreads, "one thread per query row in the softmax phases");
static_assert(kTcRows == kTcKeys, "the backward's accumulators serve a band (dq) and a key tile (dk, dv) alike");
using TcDeviceBlock = DeviceBlock<kTcThreads>;
using TcHostBlock = HostBlock<kTcThreads>;

// The shared-memory geometry of a head_dim.
struct TcDims {
  int64_t d, dp, ld, ldf;  // head_dim, padded to 16, bf16 row stride, fp32 row stride of [*, dp] accumulators
};
MOAS_HD inline TcDims tc_dims(int64_t d) {
  const int64_t dp = round_up_16(d);
  return {d, dp, dp + 8, dp + 4};
}
constexpr int64_t kTcScoreLd = kTcKeys + 4;  // fp32 [rows, keys] scores
constexpr int64_t kTcProbLd = kTcKeys + 8;   // bf16 [rows, keys] probabilities

struct TcForwardShared {
  bf16_bits *q, *k, *v, *p;  // q [kTcRows, ld], k and v [kTcKeys, ld], p [kTcRows, kTcProbLd]
  float *s, *o, *m, *l;      // s [kTcRows, kTcScoreLd], o [kTcRows, ldf], m and l [kTcRows]
  int32_t *pos;              // [kTcRows]
};
MOAS_HD inline TcForwardShared tc_forward_shared(SharedArena &arena, const TcDims &g) {
  TcForwardShared sh;
  sh.q = arena.take<bf16_bits>(kTcRows * g.ld);
  sh.k = arena.take<bf16_bits>(kTcKeys * g.ld);
  sh.v = arena.take<bf16_bits>(kTcKeys * g.ld);
  sh.p = arena.take<bf16_bits>(kTcRows * kTcProbLd);
  sh.s = arena.take<float>(kTcRows * kTcScoreLd);
  sh.o = arena.take<float>(kTcRows * g.ldf);
  sh.m = arena.take<float>(kTcRows);
  sh.l = arena.take<float>(kTcRows);
  sh.pos = arena.take<int32_t>(kTcRows);
  return sh;
}

// The dq pass (per query band) and the dk/dv pass (per key tile) share one layout: both hold q, dO, k and v as bf16,
// the scores S and dP = dO V^T in fp32, and the probabilities (dk/dv: P z) and dS in bf16; acc1/acc2 are dq (dq
// pass) or dk and dv (dk/dv pass).
struct TcBackwardShared {
  bf16_bits *q, *dout, *k, *v, *p, *ds;  // q, dout [kTcRows, ld]; k, v [kTcKeys, ld]; p, ds [kTcRows, kTcProbLd]
  float *s, *dp, *acc1, *acc2;           // s, dp [kTcRows, kTcScoreLd]; acc1, acc2 [64, ldf]
  float *D, *lse;                        // [kTcRows]
  int32_t *pos;                          // [kTcRows]
};
MOAS_HD inline TcBackwardShared tc_backward_shared(SharedArena &arena, const TcDims &g, bool two_accumulators) {
  TcBackwardShared sh;
  sh.q = arena.take<bf16_bits>(kTcRows * g.ld);
  sh.dout = arena.take<bf16_bits>(kTcRows * g.ld);
  sh.k = arena.take<bf16_bits>(kTcKeys * g.ld);
  sh.v = arena.take<bf16_bits>(kTcKeys * g.ld);
  sh.p = arena.take<bf16_bits>(kTcRows * kTcProbLd);
  sh.ds = arena.take<bf16_bits>(kTcRows * kTcProbLd);
  sh.s = arena.take<float>(kTcRows * kTcScoreLd);
  sh.dp = arena.take<float>(kTcRows * kTcScoreLd);
  sh.acc1 = arena.take<float>(kTcKeys * g.ldf);
  sh.acc2 = two_accumulators ? arena.take<float>(kTcKeys * g.ldf) : nullptr;
  sh.D = arena.take<float>(kTcRows);
  sh.lse = arena.take<float>(kTcRows);
  sh.pos = arena.take<int32_t>(kTcRows);
  return sh;
}

inline size_t tc_forward_shared_bytes(int64_t d) {
  SharedArena arena{nullptr, 0, kMmaAlign};
  tc_forward_shared(arena, tc_dims(d));
  return arena.used;
}
inline size_t tc_dq_shared_bytes(int64_t d) {
  SharedArena arena{nullptr, 0, kMmaAlign};
  tc_backward_shared(arena, tc_dims(d), false);
  return arena.used;
}
inline size_t tc_dkdv_shared_bytes(int64_t d) {
  SharedArena arena{nullptr, 0, kMmaAlign};
  tc_backward_shared(arena, tc_dims(d), true);
  return arena.used;
}

inline Grid tc_query_grid(const AttentionArgs &a) { return {ceil_div(a.dims.seq, kTcRows), a.n_heads, a.dims.batch}; }
inline Grid tc_key_grid(const AttentionArgs &a) {
  return {ceil_div(a.dims.seq, kTcKeys), a.dims.kv_heads, a.dims.batch};
}

// dst [n_rows, ld] (bf16) = rows r of src (fp32, stride src_stride, column offset taken by the caller) for r < m,
// columns < d; zeros in the padding columns and in rows m .. n_rows - 1, so the products see exact zeros there.
MOAS_HD inline void load_bf16_rows(int t, int threads, const float *src, int64_t src_stride, int64_t m, int64_t n_rows,
                                   const TcDims &g, bf16_bits *dst) {
  for (int64_t e = t; e < n_rows * g.dp; e += threads) {
    const int64_t r = e / g.dp, i = e % g.dp;
    dst[r * g.ld + i] = r < m && i < g.d ? to_bf16(src[r * src_stride + i]) : to_bf16(0.0f);
  }
}

// Keys and values j0 .. j0 + nk - 1 of kv head `head` of sequence b as bf16 [kTcKeys, ld], zero-padded.
MOAS_HD inline void load_bf16_keys(int t, int threads, const moas_cuda_key_values &kv, int64_t b, int64_t head,
                                   int64_t j0, int64_t nk, const TcDims &g, bf16_bits *k, bf16_bits *v) {
  const int64_t key0 = b * kv.seq_stride + j0 - kv.first_key;
  load_bf16_rows(t, threads, kv.k + key0 * kv.k_stride + head * g.d, kv.k_stride, nk, kTcKeys, g, k);
  load_bf16_rows(t, threads, kv.v + key0 * kv.v_stride + head * g.d, kv.v_stride, nk, kTcKeys, g, v);
}

// Forward: one block per (band of kTcRows positions, listed head, sequence), as attention_forward_block.
template <class Block>
MOAS_HD void attention_tc_forward_block(const Block &block, const AttentionArgs &a, unsigned char *shared,
                                        int64_t band, int64_t entry, int64_t b) {
  constexpr int T = Block::kThreads;
  const moas_cuda_query_head &qh = a.heads[entry];
  const TcDims g = tc_dims(a.dims.head_dim);
  const int64_t w = a.dims.window, kv_head = kv_head_of(qh.head, a.dims.heads / a.dims.kv_heads);
  int64_t r0, r1;
  if (!band_rows(qh, b, band, &r0, &r1, kTcRows)) return;
  const int64_t mq = r1 - r0, last = qh.pos[r1 - 1];
  SharedArena arena{shared, 0, kMmaAlign};
  const TcForwardShared sh = tc_forward_shared(arena, g);

  block.each([&](int t) {
    load_bf16_rows(t, T, qh.q + r0 * qh.q_stride, qh.q_stride, mq, kTcRows, g, sh.q);
    for (int64_t e = t; e < kTcRows * g.dp; e += T) sh.o[e / g.dp * g.ldf + e % g.dp] = 0.0f;
    if (t < kTcRows) {
      sh.pos[t] = t < mq ? qh.pos[r0 + t] : 0;
      sh.m[t] = negative_infinity<float>();
      sh.l[t] = 0.0f;
    }
  });
  for_each_key_tile(a, qh.pos[r0], last, kTcKeys, [&](int64_t j0, int64_t nk) {
    block.each([&](int t) { load_bf16_keys(t, T, a.kv, b, kv_head, j0, nk, g, sh.k, sh.v); });
    block_mma<false, true>(block, kTcRows, kTcKeys, g.dp, sh.q, g.ld, sh.k, g.ld, sh.s, kTcScoreLd, false);
    block.each([&](int t) {
      if (t >= kTcRows) return;
      float *s = sh.s + t * kTcScoreLd;
      bf16_bits *p = sh.p + t * kTcProbLd;
      if (t >= mq) {  // padding rows: no probability, so the product adds nothing to their (unused) output
        for (int64_t c = 0; c < kTcKeys; ++c) p[c] = to_bf16(0.0f);
        return;
      }
      int64_t lo, hi;
      visible_keys(sh.pos[t], w, j0, nk, &lo, &hi);
      for (int64_t c = lo; c < hi; ++c) s[c] *= a.scale;
      const float alpha = online_softmax_update(s, lo, hi, nk, sh.m[t], sh.l[t]);
      const uint64_t e0 = attention_dropout_element(a, b, qh.head, sh.pos[t], j0);
      for (int64_t c = 0; c < kTcKeys; ++c) {
        const float z = c < nk && a.dropout.active() ? dropout_multiplier(a, e0 + (uint64_t)c) : 1.0f;
        p[c] = to_bf16(c < nk ? s[c] * z : 0.0f);
      }
      float *o = sh.o + t * g.ldf;
      for (int64_t i = 0; i < g.dp; ++i) o[i] *= alpha;
    });
    block_mma<false, false>(block, kTcRows, g.dp, kTcKeys, sh.p, kTcProbLd, sh.v, g.ld, sh.o, g.ldf, true);
  });
  block.each([&](int t) {
    if (t >= mq) return;
    const float inv = 1.0f / sh.l[t];
    float *out = qh.out + (r0 + t) * qh.out_stride;
    for (int64_t i = 0; i < g.d; ++i) out[i] = sh.o[t * g.ldf + i] * inv;
    qh.lse[r0 + t] = sh.m[t] + logf(sh.l[t]);
  });
}

// Loads a chunk of query rows [r0, r0 + mq) for the backward: q and dO as bf16, positions, log-sum-exps and
// D = dO . O (in fp32 from the fp32 rows, as the fp32 kernel computes it).
MOAS_HD inline void load_backward_rows(int t, int threads, const moas_cuda_query_head &qh,
                                       const moas_cuda_query_head_grad &gr, int64_t r0, int64_t mq, const TcDims &g,
                                       const TcBackwardShared &sh) {
  load_bf16_rows(t, threads, qh.q + r0 * qh.q_stride, qh.q_stride, mq, kTcRows, g, sh.q);
  load_bf16_rows(t, threads, gr.dout + r0 * gr.dout_stride, gr.dout_stride, mq, kTcRows, g, sh.dout);
  if (t < kTcRows) {
    sh.pos[t] = t < mq ? qh.pos[r0 + t] : 0;
    sh.lse[t] = t < mq ? qh.lse[r0 + t] : 0.0f;
    sh.D[t] = t < mq ? dot(qh.out + (r0 + t) * qh.out_stride, gr.dout + (r0 + t) * gr.dout_stride, g.d) : 0.0f;
  }
}

// Row t of a backward tile from its scores S and dP = dO V^T: p = exp(scale s - lse) on the visible keys (0
// elsewhere and on padding rows), ds = p (dp z - D); p z into `pz` when given (the dk/dv pass needs it for dV).
MOAS_HD inline void backward_row(const AttentionArgs &a, const TcBackwardShared &sh, int64_t t, int64_t mq, int64_t b,
                                 int64_t head, int64_t j0, int64_t nk, int64_t window, bf16_bits *pz) {
  const float *s = sh.s + t * kTcScoreLd, *dp = sh.dp + t * kTcScoreLd;
  bf16_bits *ds = sh.ds + t * kTcProbLd;
  int64_t lo = 0, hi = 0;
  if (t < mq) visible_keys(sh.pos[t], window, j0, nk, &lo, &hi);
  const uint64_t e0 = t < mq ? attention_dropout_element(a, b, head, sh.pos[t], j0) : 0;
  for (int64_t c = 0; c < kTcKeys; ++c) {
    float p = 0.0f, z = 1.0f;
    if (c >= lo && c < hi) {
      p = fast_exp(a.scale * s[c] - sh.lse[t]);
      if (a.dropout.active()) z = dropout_multiplier(a, e0 + (uint64_t)c);
    }
    ds[c] = to_bf16(p * (dp[c] * z - sh.D[t]));
    if (pz) pz[t * kTcProbLd + c] = to_bf16(p * z);
  }
}

// dq: one block per (band, listed head, sequence), as attention_dq_block.
template <class Block>
MOAS_HD void attention_tc_dq_block(const Block &block, const AttentionArgs &a, unsigned char *shared, int64_t band,
                                   int64_t entry, int64_t b) {
  constexpr int T = Block::kThreads;
  const moas_cuda_query_head &qh = a.heads[entry];
  const moas_cuda_query_head_grad &gr = a.grads[entry];
  const TcDims g = tc_dims(a.dims.head_dim);
  const int64_t w = a.dims.window, kv_head = kv_head_of(qh.head, a.dims.heads / a.dims.kv_heads);
  int64_t r0, r1;
  if (!band_rows(qh, b, band, &r0, &r1, kTcRows)) return;
  const int64_t mq = r1 - r0, last = qh.pos[r1 - 1];
  SharedArena arena{shared, 0, kMmaAlign};
  const TcBackwardShared sh = tc_backward_shared(arena, g, false);

  block.each([&](int t) {
    load_backward_rows(t, T, qh, gr, r0, mq, g, sh);
    for (int64_t e = t; e < kTcRows * g.dp; e += T) sh.acc1[e / g.dp * g.ldf + e % g.dp] = 0.0f;
  });
  for_each_key_tile(a, qh.pos[r0], last, kTcKeys, [&](int64_t j0, int64_t nk) {
    block.each([&](int t) { load_bf16_keys(t, T, a.kv, b, kv_head, j0, nk, g, sh.k, sh.v); });
    block_mma<false, true>(block, kTcRows, kTcKeys, g.dp, sh.q, g.ld, sh.k, g.ld, sh.s, kTcScoreLd, false);
    block_mma<false, true>(block, kTcRows, kTcKeys, g.dp, sh.dout, g.ld, sh.v, g.ld, sh.dp, kTcScoreLd, false);
    block.each([&](int t) {
      if (t < kTcRows) backward_row(a, sh, t, mq, b, qh.head, j0, nk, w, nullptr);
    });
    block_mma<false, false>(block, kTcRows, g.dp, kTcKeys, sh.ds, kTcProbLd, sh.k, g.ld, sh.acc1, g.ldf, true);
  });
  block.each([&](int t) {
    if (t >= mq) return;
    float *dq = gr.dq + (r0 + t) * gr.dq_stride;
    for (int64_t i = 0; i < g.d; ++i) dq[i] = a.scale * sh.acc1[t * g.ldf + i];
  });
}

// dk, dv: one block per (tile of kTcKeys keys, kv head, sequence), looping over the listed heads of that kv head in
// list order and their query rows in chunks of one band, as attention_dkdv_block (deterministic, no atomics).
template <class Block>
MOAS_HD void attention_tc_dkdv_block(const Block &block, const AttentionArgs &a, unsigned char *shared, int64_t tile,
                                     int64_t kv_head, int64_t b) {
  constexpr int T = Block::kThreads;
  const TcDims g = tc_dims(a.dims.head_dim);
  const int64_t w = a.dims.window;
  const int64_t j0 = tile * kTcKeys, nk = min_i64(kTcKeys, a.dims.seq - j0);
  if (!kv_head_read(a, kv_head) || nk <= 0) return;
  SharedArena arena{shared, 0, kMmaAlign};
  const TcBackwardShared sh = tc_backward_shared(arena, g, true);
  float *dk = sh.acc1, *dv = sh.acc2;

  block.each([&](int t) {
    load_bf16_keys(t, T, a.kv, b, kv_head, j0, nk, g, sh.k, sh.v);
    for (int64_t e = t; e < kTcKeys * g.dp; e += T) {
      dk[e / g.dp * g.ldf + e % g.dp] = 0.0f;
      dv[e / g.dp * g.ldf + e % g.dp] = 0.0f;
    }
  });
  for_each_chunk_seeing(a, b, kv_head, j0, kTcKeys, kTcRows, [&](int64_t e, int64_t r0, int64_t mq) {
    const moas_cuda_query_head &qh = a.heads[e];
    const moas_cuda_query_head_grad &gr = a.grads[e];
    block.each([&](int t) { load_backward_rows(t, T, qh, gr, r0, mq, g, sh); });
    block_mma<false, true>(block, kTcRows, kTcKeys, g.dp, sh.q, g.ld, sh.k, g.ld, sh.s, kTcScoreLd, false);
    block_mma<false, true>(block, kTcRows, kTcKeys, g.dp, sh.dout, g.ld, sh.v, g.ld, sh.dp, kTcScoreLd, false);
    block.each([&](int t) {
      if (t < kTcRows) backward_row(a, sh, t, mq, b, qh.head, j0, nk, w, sh.p);
    });
    // dV += (P z)^T dO and dK += dS^T Q: the [rows, keys] tiles read transposed.
    block_mma<true, false>(block, kTcKeys, g.dp, kTcRows, sh.p, kTcProbLd, sh.dout, g.ld, dv, g.ldf, true);
    block_mma<true, false>(block, kTcKeys, g.dp, kTcRows, sh.ds, kTcProbLd, sh.q, g.ld, dk, g.ldf, true);
  });
  block.each([&](int t) {
    if (t >= nk) return;
    const int64_t key = b * a.kv.seq_stride + j0 + t;
    for (int64_t i = 0; i < g.d; ++i) {
      a.dkv.dk[key * a.dkv.dk_stride + kv_head * g.d + i] = a.scale * dk[t * g.ldf + i];
      a.dkv.dv[key * a.dkv.dv_stride + kv_head * g.d + i] = dv[t * g.ldf + i];
    }
  });
}

// Launchers (attention_tc.cu), called by attention.cu's when the calling thread's matmul precision is BF16 and
// tensor_core_attention says the device and head_dim allow it.
bool tensor_core_attention(int64_t head_dim);
int32_t attention_tc_forward(const AttentionArgs &a, void *stream);
int32_t attention_tc_backward(const AttentionArgs &a, void *stream);

}  // namespace cuda
}  // namespace moas
