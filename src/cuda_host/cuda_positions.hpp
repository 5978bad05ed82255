// Where the tokens of a forward sit, on the device — every token's position and row index, the sequence bounds (the
// row descriptors of dense attention) and RoPE's tables — and the CudaContext a CUDA model or layer hands its
// blocks from them.
#pragma once

#include <cstdint>
#include <vector>

#include "config/config.hpp"
#include "cuda_host/cuda_attention.hpp"
#include "cuda_host/device_array.hpp"
#include "ops/rope.hpp"

namespace moas {

class DevicePositions {
 public:
  // RoPE's cos / sin tables (rope.hpp's RopeTable, grown the same way: to the positions forwards reach) when
  // `config` uses RoPE.
  DevicePositions(const moas_cuda_backend &t, const ModelConfig &config) : t_(&t) {
    if (config.position == PositionKind::Rope) rope_.configure(config.block_size, config.head_dim(), config.rope_base);
  }

  // A forward of `batch` sequences of `seq` new tokens after `past` cached ones: pos[b * seq + t] = past + t,
  // begin[b] = b * seq. The row indices n (the same for every forward of at most that many tokens) are uploaded only
  // when a forward has more tokens than any before.
  void set(int64_t batch, int64_t seq, int64_t past) {
    if (rope_.half > 0 && past + seq > rope_on_device_) {
      rope_.cover(past + seq);
      rope_on_device_ = 0;  // until both copies have landed
      rope_cos_.upload(*t_, rope_.cos.data(), (int64_t)rope_.cos.size());
      rope_sin_.upload(*t_, rope_.sin.data(), (int64_t)rope_.sin.size());
      rope_on_device_ = rope_.positions();
    }
    batch_ = batch;
    seq_ = seq;
    past_ = past;
    const int64_t N = batch * seq;
    std::vector<int32_t> p((size_t)N);
    std::vector<int64_t> b((size_t)batch + 1);
    for (int64_t n = 0; n < N; n++) p[(size_t)n] = (int32_t)(past + n % seq);
    for (int64_t s = 0; s <= batch; s++) b[(size_t)s] = s * seq;
    pos_.upload(*t_, p.data(), N);
    begin_.upload(*t_, b.data(), batch + 1);
    if (N > rows_held_) {
      std::vector<int64_t> r((size_t)N);
      for (int64_t n = 0; n < N; n++) r[(size_t)n] = n;
      rows_.upload(*t_, r.data(), N);
      rows_held_ = N;
    }
  }

  int64_t batch() const { return batch_; }
  int64_t seq() const { return seq_; }
  int64_t past() const { return past_; }
  const int32_t *pos() const { return pos_.get(); }

  // The context of `layer` in the last set() forward: dropout p of this forward, the config's attention dropout and
  // seed, the masks' step.
  CudaContext context(const ModelConfig &config, float dropout, uint64_t step, uint32_t layer) const {
    CudaContext ctx;
    ctx.batch = batch_;
    ctx.seq = seq_;
    ctx.past = past_;
    ctx.pos = pos_.get();
    ctx.rows = rows_.get();
    ctx.begin = begin_.get();
    if (rope_.half > 0) {
      ctx.rope_cos = rope_cos_.get();
      ctx.rope_sin = rope_sin_.get();
      ctx.rope_half = rope_.half;
    }
    ctx.dropout = dropout;
    ctx.attn_dropout = config.attn_dropout;
    ctx.seed = config.seed;
    ctx.step = step;
    ctx.layer = layer;
    return ctx;
  }

 private:
  const moas_cuda_backend *t_;
  DeviceArray<int32_t> pos_;
  DeviceArray<int64_t> begin_, rows_;
  int64_t rows_held_ = 0;
  RopeTable<float> rope_;  // the host copy, extended as forwards reach further
  DeviceArray<float> rope_cos_, rope_sin_;
  int64_t rope_on_device_ = 0;  // positions the device tables cover
  int64_t batch_ = 0, seq_ = 0, past_ = 0;
};

}  // namespace moas
