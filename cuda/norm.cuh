// LayerNorm and RMSNorm on the GPU (the CUDA twin of src/ops/norm.hpp), forward and backward, with the CPU's per-element
// arithmetic (norm_rstd, norm_input_grad) and its saved mean / rstd.
// forward, dx:  one block per row; the row's sums are block_sum trees over per-thread strided partials.
// dweight/dbias: column sums over rows in a fixed order, in two passes so that many blocks share the work: per band
//                of MOAS_CUDA_NORM_ROW_BAND rows, each column summed over the band's rows in order into scratch; then
//                per column, the bands' partials in band order, added onto dweight / dbias.
#pragma once

#include <cstdint>

#include "block.cuh"
#include "cuda_host/cuda_backend.h"
#include "ops/norm.hpp"

namespace moas {
namespace cuda {

constexpr int kNormThreads = 128;
constexpr int64_t kNormRowBand = MOAS_CUDA_NORM_ROW_BAND;
using NormDeviceBlock = DeviceBlock<kNormThreads>;
using NormHostBlock = HostBlock<kNormThreads>;

struct NormArgs {
  bool rms;
  float *out, *mean_out, *rstd_out;         // forward: [N, C], [N], [N]
  float *dinp, *dweight, *dbias, *scratch;  // backward (dbias may be null); scratch: the partials of both sums
  const float *dout, *inp, *weight, *bias;  // bias: forward, may be null
  const float *mean, *rstd;                 // backward: what the forward saved
  int64_t N, C;
};

inline Grid norm_row_grid(const NormArgs &a) { return {a.N, 1, 1}; }
inline Grid norm_band_grid(const NormArgs &a) { return {ceil_div(a.C, kNormThreads), ceil_div(a.N, kNormRowBand), 1}; }
inline Grid norm_column_grid(const NormArgs &a) { return {ceil_div(a.C, kNormThreads), 1, 1}; }
inline size_t norm_shared_bytes() {  // two per-thread partial sums
  SharedArena arena{nullptr};
  arena.take<float>(kNormThreads);
  arena.take<float>(kNormThreads);
  return arena.used;
}

template <class Block>
MOAS_HD void norm_forward_block(const Block &block, const NormArgs &a, unsigned char *shared, int64_t n) {
  constexpr int T = Block::kThreads;
  SharedArena arena{shared};
  float *sum = arena.take<float>(T), *sum_sq = arena.take<float>(T);
  const float *x = a.inp + n * a.C;
  float mu = 0.0f;
  if (!a.rms) {
    block.each([&](int t) {
      float s = 0.0f;
      for (int64_t c = t; c < a.C; c += T) s += x[c];
      sum[t] = s;
    });
    block_sum(block, sum);
    mu = sum[0] / (float)a.C;
  }
  block.each([&](int t) {
    float s = 0.0f;
    for (int64_t c = t; c < a.C; c += T) s += (x[c] - mu) * (x[c] - mu);
    sum_sq[t] = s;
  });
  block_sum(block, sum_sq);
  const float rs = norm_rstd(sum_sq[0], a.C);
  float *o = a.out + n * a.C;
  block.each([&](int t) {
    for (int64_t c = t; c < a.C; c += T) o[c] = (x[c] - mu) * rs * a.weight[c] + (a.bias ? a.bias[c] : 0.0f);
    if (t == 0) {
      a.mean_out[n] = mu;
      a.rstd_out[n] = rs;
    }
  });
}

// dinp[n] += d/dx of row n.
template <class Block>
MOAS_HD void norm_backward_row_block(const Block &block, const NormArgs &a, unsigned char *shared, int64_t n) {
  constexpr int T = Block::kThreads;
  SharedArena arena{shared};
  float *g_sum = arena.take<float>(T), *gx_sum = arena.take<float>(T);
  const float *x = a.inp + n * a.C, *dy = a.dout + n * a.C;
  const float mu = a.mean[n], rs = a.rstd[n];
  block.each([&](int t) {
    float g_part = 0.0f, gx_part = 0.0f;
    for (int64_t c = t; c < a.C; c += T) {
      const float g = dy[c] * a.weight[c];
      g_part += g;
      gx_part += g * (x[c] - mu) * rs;
    }
    g_sum[t] = g_part;
    gx_sum[t] = gx_part;
  });
  block_sum(block, g_sum);
  block_sum(block, gx_sum);
  const float g_mean = a.rms ? 0.0f : g_sum[0] / (float)a.C, gx_mean = gx_sum[0] / (float)a.C;
  float *dx = a.dinp + n * a.C;
  block.each([&](int t) {
    for (int64_t c = t; c < a.C; c += T)
      dx[c] += norm_input_grad(dy[c], a.weight[c], (x[c] - mu) * rs, rs, g_mean, gx_mean);
  });
}

// scratch[band, c] = sum of dout * xhat over the band's rows, in order; scratch[bands + band, c] likewise of dout.
template <class Block>
MOAS_HD void norm_backward_band_block(const Block &block, const NormArgs &a, int64_t column_band, int64_t band) {
  constexpr int T = Block::kThreads;
  const int64_t bands = ceil_div(a.N, kNormRowBand), n0 = band * kNormRowBand, n1 = min_i64(a.N, n0 + kNormRowBand);
  block.each([&](int t) {
    const int64_t c = column_band * T + t;
    if (c >= a.C) return;
    float w = 0.0f, b = 0.0f;
    for (int64_t n = n0; n < n1; ++n) {
      const float dy = a.dout[n * a.C + c];
      w += dy * ((a.inp[n * a.C + c] - a.mean[n]) * a.rstd[n]);
      b += dy;
    }
    a.scratch[band * a.C + c] = w;
    a.scratch[(bands + band) * a.C + c] = b;
  });
}

// dweight[c] += the bands' partials in band order; dbias likewise.
template <class Block>
MOAS_HD void norm_backward_column_block(const Block &block, const NormArgs &a, int64_t column_band) {
  constexpr int T = Block::kThreads;
  const int64_t bands = ceil_div(a.N, kNormRowBand);
  block.each([&](int t) {
    const int64_t c = column_band * T + t;
    if (c >= a.C) return;
    float w = 0.0f, b = 0.0f;
    for (int64_t k = 0; k < bands; ++k) {
      w += a.scratch[k * a.C + c];
      b += a.scratch[(bands + k) * a.C + c];
    }
    a.dweight[c] += w;
    if (a.dbias) a.dbias[c] += b;
  });
}

// Launchers (norm.cu); the table's norm_forward and norm_backward.
int32_t norm_forward(int32_t rms, float *out, float *mean, float *rstd, const float *inp, const float *weight,
                     const float *bias, int64_t N, int64_t C, void *stream);
int32_t norm_backward(int32_t rms, float *dinp, float *dweight, float *dbias, float *scratch, const float *dout,
                      const float *inp, const float *weight, const float *mean, const float *rstd, int64_t N, int64_t C,
                      void *stream);

}  // namespace cuda
}  // namespace moas
