// Causal attention with CoPE on the GPU (the CUDA twin of src/attention/cope_attention.cpp, SPEC §7), forward and backward, on
// the same query heads, row sets, key/value views, windows and dropout as attention.cuh. A row's positions are suffix
// sums of its gates over all its keys, so, as on the CPU, the work goes row by row (never T x T), with the per-row
// arithmetic of src/attention/cope_math.hpp:
//   forward:  one block per (compact row, listed head, sequence). The block's threads share the row's keys: raw scores
//             and gates, z_n = q . e[n] for the positions the row can reach, the positions (cope_positions over
//             contiguous chunks of keys, one per thread, chained by one thread's pass over the chunk totals: the CPU's
//             order exactly when the row has at most kCopeThreads keys), the interpolated logits, the softmax (block
//             trees), then out one column per thread with the keys in order.
//   backward: one block per (kv head, sequence), walking the group's listed heads in list order and their rows in
//             order, as the CPU's task does: per row the logits again, then ds, dz (one thread per position, gathering
//             the keys whose segment touches it, in key order), dp, the gates' gradients (prefix sums in chunks) and
//             the updates of dq, dk, dv and the sequence's slice of de, each element owned by one thread. So dk/dv
//             sum rows in the CPU's order without atomics; de sums the sequences' slices in order in a second kernel.
// Shared memory is O(keys a row sees + max_pos) per block.
#pragma once

#include <cstdint>

#include "attention.cuh"
#include "attention/cope_math.hpp"

namespace moas {
namespace cuda {

constexpr int kCopeThreads = 128;
using CopeDeviceBlock = DeviceBlock<kCopeThreads>;
using CopeHostBlock = HostBlock<kCopeThreads>;

struct CopeArgs {
  AttentionArgs attention;  // dims, keys/values, heads, grads, scale, dropout
  const float *e;           // [H, P, d]
  int64_t max_pos;          // P
  float *de;                // backward: [H, P, d], accumulated
  float *de_per_sequence;   // backward scratch: [B, H, P, d]
};

// Grids: forward (compact row within its sequence, listed head, sequence); backward (kv head, sequence); the
// embedding gradient one thread per element of de.
inline Grid cope_forward_grid(const CopeArgs &c) {
  return {c.attention.dims.seq, c.attention.n_heads, c.attention.dims.batch};
}
inline Grid cope_backward_grid(const CopeArgs &c) { return {c.attention.dims.kv_heads, c.attention.dims.batch, 1}; }
inline Grid cope_embedding_grad_grid(const CopeArgs &c) {
  return {ceil_div(c.attention.dims.heads * c.max_pos * c.attention.dims.head_dim, kCopeThreads), 1, 1};
}

struct CopeShared {
  float *q, *dout;                          // [d] (dout: backward)
  float *score, *gate, *position, *weight;  // [keys] (weight: backward)
  float *z, *dz;                            // [reach] (dz: backward)
  float *carry, *top, *total;               // [Threads]: chunk carries, the block's max and sum
  float *D;                                 // [1]: backward
};
MOAS_HD inline CopeShared cope_shared(SharedArena &arena, const CopeArgs &c, int threads, bool backward) {
  const moas_cuda_attention_dims &s = c.attention.dims;
  const int64_t keys = max_visible_keys(s.seq, s.window), reach = min_i64(c.max_pos, keys + 1);
  CopeShared sh{};
  sh.q = arena.take<float>(s.head_dim);
  sh.score = arena.take<float>(keys);
  sh.gate = arena.take<float>(keys);
  sh.position = arena.take<float>(keys);
  sh.z = arena.take<float>(reach);
  sh.carry = arena.take<float>(threads);
  if (backward) {
    sh.dout = arena.take<float>(s.head_dim);
    sh.weight = arena.take<float>(keys);
    sh.dz = arena.take<float>(reach);
    sh.D = arena.take<float>(1);
  } else {
    sh.top = arena.take<float>(threads);
    sh.total = arena.take<float>(threads);
  }
  return sh;
}
inline size_t cope_shared_bytes(const CopeArgs &c, bool backward) {
  SharedArena arena{nullptr};
  cope_shared(arena, c, kCopeThreads, backward);
  return arena.used;
}

// Compact row r of a query head in sequence b: its q, its head's embeddings, the n keys it sees (positions first ..
// pos), the z it needs and the dropout element of its first key.
struct CopeRow {
  const float *q, *e, *k, *v;  // k, v at key `first`
  int64_t pos, first, n, reach;
  uint64_t e0;
};
MOAS_HD inline CopeRow cope_row(const CopeArgs &c, const moas_cuda_query_head &qh, int64_t b, int64_t r) {
  const AttentionArgs &a = c.attention;
  const int64_t d = a.dims.head_dim, g = kv_head_of(qh.head, a.dims.heads / a.dims.kv_heads), pos = qh.pos[r];
  const int64_t first = first_visible_key(pos, a.dims.window), key = b * a.kv.seq_stride + first - a.kv.first_key;
  const int64_t n = pos - first + 1;
  return {qh.q + r * qh.q_stride,
          c.e + qh.head * c.max_pos * d,
          a.kv.k + key * a.kv.k_stride + g * d,
          a.kv.v + key * a.kv.v_stride + g * d,
          pos,
          first,
          n,
          min_i64(c.max_pos, n + 1),
          attention_dropout_element(a, b, qh.head, pos, first)};
}

// The keys [*j0, *j1) of thread t's chunk when the block splits n keys into contiguous chunks.
MOAS_HD inline void key_chunk(int t, int threads, int64_t n, int64_t *j0, int64_t *j1) {
  const int64_t chunk = ceil_div(n, threads);
  *j0 = min_i64(t * chunk, n);
  *j1 = min_i64(*j0 + chunk, n);
}

// position[j] = cope_positions of the n gates, by chunks: each thread's chunk total, the totals after each chunk
// (one thread, in order), then each chunk's suffix sums from its carry.
template <class Block>
MOAS_HD void cope_positions_block(const Block &block, const float *gate, int64_t n, int64_t max_pos, float *position,
                                  float *carry) {
  constexpr int T = Block::kThreads;
  block.each([&](int t) {
    int64_t j0, j1;
    key_chunk(t, T, n, &j0, &j1);
    float sum = 0.0f;
    for (int64_t j = j1 - 1; j >= j0; --j) sum += gate[j];
    carry[t] = sum;
  });
  block.each([&](int t) {
    if (t > 0) return;
    float after = 0.0f;
    for (int u = T - 1; u >= 0; --u) {
      const float own = carry[u];
      carry[u] = after;
      after += own;
    }
  });
  block.each([&](int t) {
    int64_t j0, j1;
    key_chunk(t, T, n, &j0, &j1);
    cope_positions(gate + j0, j1 - j0, max_pos, position + j0, carry[t]);
  });
}

// grad[j] = cope_positions_backward of the n position gradients in grad (in place), by chunks as above.
template <class Block>
MOAS_HD void cope_positions_backward_block(const Block &block, float *grad, int64_t n, float *carry) {
  constexpr int T = Block::kThreads;
  block.each([&](int t) {
    int64_t j0, j1;
    key_chunk(t, T, n, &j0, &j1);
    float sum = 0.0f;
    for (int64_t j = j0; j < j1; ++j) sum += grad[j];
    carry[t] = sum;
  });
  block.each([&](int t) {
    if (t > 0) return;
    float before = 0.0f;
    for (int u = 0; u < T; ++u) {
      const float own = carry[u];
      carry[u] = before;
      before += own;
    }
  });
  block.each([&](int t) {
    int64_t j0, j1;
    key_chunk(t, T, n, &j0, &j1);
    cope_positions_backward(grad + j0, j1 - j0, grad + j0, carry[t]);
  });
}

// The row's logits in sh.score, with the gates and positions they came from and z over the positions the row can
// reach (row_logits in src/attention/cope_attention.cpp); sh.q holds the row's q.
template <class Block>
MOAS_HD void cope_row_logits(const Block &block, const CopeArgs &c, const CopeRow &row, const CopeShared &sh) {
  constexpr int T = Block::kThreads;
  const AttentionArgs &a = c.attention;
  const int64_t d = a.dims.head_dim;
  block.each([&](int t) {
    for (int64_t j = t; j < row.n; j += T) {
      const float raw = a.scale * dot(sh.q, row.k + j * a.kv.k_stride, d);
      sh.score[j] = raw;
      sh.gate[j] = 1.0f / (1.0f + fast_exp(-raw));
    }
    for (int64_t m = t; m < row.reach; m += T) sh.z[m] = dot(sh.q, row.e + m * d, d);
  });
  cope_positions_block(block, sh.gate, row.n, c.max_pos, sh.position, sh.carry);
  block.each([&](int t) {
    for (int64_t j = t; j < row.n; j += T) sh.score[j] += cope_interpolate(sh.z, sh.position[j]);
  });
}

template <class Block>
MOAS_HD void cope_forward_block(const Block &block, const CopeArgs &c, unsigned char *shared, int64_t x, int64_t entry,
                                int64_t b) {
  constexpr int T = Block::kThreads;
  const AttentionArgs &a = c.attention;
  const moas_cuda_query_head &qh = a.heads[entry];
  const int64_t r = qh.begin[b] + x, d = a.dims.head_dim;
  if (r >= qh.begin[b + 1]) return;
  SharedArena arena{shared};
  const CopeShared sh = cope_shared(arena, c, T, false);
  const CopeRow row = cope_row(c, qh, b, r);

  block.each([&](int t) {
    for (int64_t i = t; i < d; i += T) sh.q[i] = row.q[i];
  });
  cope_row_logits(block, c, row, sh);
  block.each([&](int t) {
    float top = negative_infinity<float>();
    for (int64_t j = t; j < row.n; j += T) top = sh.score[j] > top ? sh.score[j] : top;
    sh.top[t] = top;
  });
  block_max(block, sh.top);
  const float mx = sh.top[0];
  block.each([&](int t) {
    float sum = 0.0f;
    for (int64_t j = t; j < row.n; j += T) sum += (sh.score[j] = fast_exp(sh.score[j] - mx));
    sh.total[t] = sum;
  });
  block_sum(block, sh.total);
  const float sum = sh.total[0], inv = 1.0f / sum;
  block.each([&](int t) {  // the probabilities, dropped after normalisation as on the CPU
    for (int64_t j = t; j < row.n; j += T) {
      sh.score[j] *= inv;
      if (a.dropout.active()) sh.score[j] *= dropout_multiplier(a, row.e0 + (uint64_t)j);
    }
  });
  float *out = qh.out + r * qh.out_stride;
  block.each([&](int t) {
    for (int64_t i = t; i < d; i += T) {
      float acc = 0.0f;
      for (int64_t j = 0; j < row.n; ++j) acc += sh.score[j] * row.v[j * a.kv.v_stride + i];
      out[i] = acc;
    }
    if (t == 0) qh.lse[r] = mx + std::log(sum);
  });
}

// Per row, with A = exp(s - lse), M the dropout multipliers and D = dout . out (as src/attention/cope_attention.cpp):
//   dv_j += A_j M_j dout, ds_j = A_j (M_j dout . v_j - D); dz from ds through the interpolation, dp_j = ds_j slope_j;
//   the gates' gradients (prefix sums of dp), d raw_j = scale (ds_j + dg_j g_j (1 - g_j));
//   dq = sum_j d raw_j k_j + sum_n dz_n e_n, dk_j += d raw_j q, de_n += dz_n q.
template <class Block>
MOAS_HD void cope_backward_block(const Block &block, const CopeArgs &c, unsigned char *shared, int64_t g, int64_t b) {
  constexpr int T = Block::kThreads;
  const AttentionArgs &a = c.attention;
  const int64_t H = a.dims.heads, d = a.dims.head_dim, group = H / a.dims.kv_heads, PD = c.max_pos * d;
  bool read = false;  // kv heads that no listed head reads keep their dk/dv untouched, as on the CPU
  for (int64_t e = 0; e < a.n_heads; ++e) read = read || kv_head_of(a.heads[e].head, group) == g;
  if (!read) return;
  SharedArena arena{shared};
  const CopeShared sh = cope_shared(arena, c, T, true);
  const moas_cuda_key_values &kv = a.kv;
  const moas_cuda_key_value_grads &dkv = a.dkv;

  block.each([&](int t) {
    for (int64_t el = t; el < a.dims.seq * d; el += T) {
      const int64_t key = b * kv.seq_stride + el / d, i = el % d;
      dkv.dk[key * dkv.dk_stride + g * d + i] = 0.0f;
      dkv.dv[key * dkv.dv_stride + g * d + i] = 0.0f;
    }
    for (int64_t e = 0; e < a.n_heads; ++e) {
      if (kv_head_of(a.heads[e].head, group) != g) continue;
      float *slice = c.de_per_sequence + (b * H + a.heads[e].head) * PD;
      for (int64_t el = t; el < PD; el += T) slice[el] = 0.0f;
    }
  });
  for (int64_t e = 0; e < a.n_heads; ++e) {
    const moas_cuda_query_head &qh = a.heads[e];
    if (kv_head_of(qh.head, group) != g) continue;
    const moas_cuda_query_head_grad &gr = a.grads[e];
    float *slice = c.de_per_sequence + (b * H + qh.head) * PD;
    for (int64_t r = qh.begin[b]; r < qh.begin[b + 1]; ++r) {
      const CopeRow row = cope_row(c, qh, b, r);
      const float *dout = gr.dout + r * gr.dout_stride;
      block.each([&](int t) {
        for (int64_t i = t; i < d; i += T) {
          sh.q[i] = row.q[i];
          sh.dout[i] = dout[i];
        }
        if (t == 0) *sh.D = dot(qh.out + r * qh.out_stride, dout, d);
      });
      cope_row_logits(block, c, row, sh);
      const float lse = qh.lse[r];
      block.each([&](int t) {
        for (int64_t j = t; j < row.n; j += T) {
          const float p = fast_exp(sh.score[j] - lse), mask = dropout_multiplier(a, row.e0 + (uint64_t)j);
          sh.weight[j] = p * mask;
          sh.score[j] = p * (mask * dot(sh.dout, row.v + j * kv.v_stride, d) - *sh.D);  // now ds_j
        }
      });
      block.each([&](int t) {  // dz: the CPU's cope_interpolate_backward contributions to each n, in key order
        for (int64_t m = t; m < row.reach; m += T) {
          float dz = 0.0f;
          for (int64_t j = 0; j < row.n; ++j) {
            const CopeSegment<float> s = cope_segment(sh.position[j]);
            if (s.lo == m) dz += sh.score[j] * (1.0f - s.frac);
            if (s.hi == m) dz += sh.score[j] * s.frac;
          }
          sh.dz[m] = dz;
        }
      });
      block.each([&](int t) {
        for (int64_t j = t; j < row.n; j += T) sh.position[j] = sh.score[j] * cope_slope(sh.z, sh.position[j]);  // dp_j
      });
      cope_positions_backward_block(block, sh.position, row.n, sh.carry);  // now d g_j
      block.each([&](int t) {
        for (int64_t j = t; j < row.n; j += T)  // now d raw_j
          sh.score[j] = a.scale * (sh.score[j] + sh.position[j] * sh.gate[j] * (1.0f - sh.gate[j]));
      });
      block.each([&](int t) {
        float *dq = gr.dq + r * gr.dq_stride;
        for (int64_t i = t; i < d; i += T) {
          float acc = 0.0f;
          for (int64_t j = 0; j < row.n; ++j) acc += sh.score[j] * row.k[j * kv.k_stride + i];
          for (int64_t m = 0; m < row.reach; ++m) acc += sh.dz[m] * row.e[m * d + i];
          dq[i] = acc;
        }
        const int64_t key0 = b * kv.seq_stride + row.first;
        for (int64_t el = t; el < row.n * d; el += T) {
          const int64_t j = el / d, i = el % d;
          dkv.dk[(key0 + j) * dkv.dk_stride + g * d + i] += sh.score[j] * sh.q[i];
          dkv.dv[(key0 + j) * dkv.dv_stride + g * d + i] += sh.weight[j] * sh.dout[i];
        }
        for (int64_t el = t; el < row.reach * d; el += T) slice[el] += sh.dz[el / d] * sh.q[el % d];
      });
    }
  }
}

// de[h] += the sequences' slices of h, in sequence order, for every listed head h.
template <class Block>
MOAS_HD void cope_embedding_grad_block(const Block &block, const CopeArgs &c, int64_t x) {
  const AttentionArgs &a = c.attention;
  const int64_t PD = c.max_pos * a.dims.head_dim, HPD = a.dims.heads * PD;
  block.each([&](int t) {
    const int64_t el = x * Block::kThreads + t;
    if (el >= HPD) return;
    bool listed = false;
    for (int64_t e = 0; e < a.n_heads; ++e) listed = listed || a.heads[e].head == el / PD;
    if (!listed) return;
    float sum = 0.0f;
    for (int64_t b = 0; b < a.dims.batch; ++b) sum += c.de_per_sequence[b * HPD + el];
    c.de[el] += sum;
  });
}

// Launchers (cope_attention.cu); the table's cope_attention_forward and cope_attention_backward.
int32_t cope_attention_forward(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                               const moas_cuda_query_head *heads, int64_t n_heads, const float *e, int64_t max_pos,
                               const moas_cuda_dropout *dropout, void *stream);
int32_t cope_attention_backward(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                                const moas_cuda_query_head *heads, const moas_cuda_query_head_grad *grads,
                                int64_t n_heads, const moas_cuda_key_value_grads *dkv, const float *e, int64_t max_pos,
                                float *de, float *scratch, const moas_cuda_dropout *dropout, void *stream);

}  // namespace cuda
}  // namespace moas
