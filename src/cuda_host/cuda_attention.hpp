// The attention sub-block on a CUDA device (attention_block.hpp's twin): one per layer of a CudaModel, owning its
// device buffers, reading and writing the model's flat device parameter and gradient buffers by offset. Each kind
// mirrors its CPU class step for step: CudaScheme (scheme.cpp), CudaMoas (moas.cpp), CudaMoh (moh.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attention/router_stats.hpp"
#include "config/config.hpp"
#include "cuda_host/cuda_backend.h"
#include "ops/dropout.hpp"
#include "ops/params.hpp"

namespace moas {

struct DeviceLayerCache;  // cuda_kv_cache.hpp

// What a block needs to know about the forward it is part of (BlockContext's device twin). Pointers are device
// memory.
struct CudaContext {
  int64_t batch = 0, seq = 0;
  DeviceLayerCache *cache = nullptr;  // decoding: keys and values of earlier positions, extended by this forward
  int64_t past = 0;                   // positions already in the cache (the first new token's position)
  const int32_t *pos = nullptr;    // [batch * seq] every token's position (past + t)
  const int64_t *rows = nullptr;   // [batch * seq] every token's row index n (a dense branch's rows)
  const int64_t *begin = nullptr;  // [batch + 1] b * seq: every token, as the row descriptors of dense attention
  const float *rope_cos = nullptr, *rope_sin = nullptr;  // RoPE's tables [block_size, half]; null without RoPE
  int64_t rope_half = 0;
  float dropout = 0.0f;  // p of this forward (0 in eval)
  bool attn_dropout = false;
  uint64_t seed = 0, step = 0;
  uint32_t layer = 0;

  int64_t tokens() const { return batch * seq; }
  int64_t key_length() const { return past + seq; }  // key positions per sequence so far (the cache may hold fewer)
  moas_cuda_dropout site(uint32_t id) const {
    const Dropout d = Dropout::at(dropout, seed, step, layer, id);
    return {d.p, d.key};
  }
};

class CudaAttention {
 public:
  virtual ~CudaAttention() = default;
  // x [N, C] -> y [N, C] (overwritten); keeps what backward needs. values: the model's device parameters.
  virtual void forward(const float *values, const float *x, float *y, const CudaContext &ctx, bool training) = 0;
  // dy [N, C] (clobbered) -> dx [N, C] (accumulated); parameter gradients accumulate into grads, including
  // aux_grad_scale times the load-balance loss's.
  virtual void backward(const float *values, float *grads, const float *x, float *dy, float *dx,
                        const CudaContext &ctx, double aux_grad_scale) = 0;
  // The unweighted load-balance loss of the last training forward (0 without a router).
  virtual double aux_loss() const { return 0.0; }
  // The router statistics of the last forward (router_stats.hpp) into *out; false for a block without a router.
  virtual bool router_stats(RouterStats *) const { return false; }
  // The per-token gates of the last forward, as AttentionBlock::gates (downloaded); empty (width 0) without routing.
  virtual std::vector<float> gates(int64_t *width) const {
    *width = 0;
    return {};
  }
};

// The block `config` asks for, its tensors found in `params` (the host mirror's layout) under `prefix`.
std::unique_ptr<CudaAttention> make_cuda_attention(const moas_cuda_backend &t, const ModelConfig &config,
                                                   const ParamTable<float> &params, const std::string &prefix);

}  // namespace moas
