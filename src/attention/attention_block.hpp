// The attention sub-block of a transformer layer, y = Attn(x) on the block's normalised input: one scheme
// (MHA/GQA/MQA, SPEC §2), a Mixture of Attention Schemes (§3) or Mixture-of-Heads (§4). The model (and the layer API)
// hold one per layer; each registers its tensors under the layer's prefix with the reference PyTorch names.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attention/block_context.hpp"
#include "attention/router_stats.hpp"
#include "config/config.hpp"
#include "ops/params.hpp"

namespace moas {

template <typename T>
class AttentionBlock {
 public:
  virtual ~AttentionBlock() = default;
  // x [N, C] -> y [N, C] (overwritten). In training keeps what backward needs and computes the load-balance loss.
  virtual void forward(const ParamTable<T> &params, const T *x, T *y, const BlockContext<T> &ctx, bool training) = 0;
  // dy [N, C] (clobbered) -> dx [N, C] (accumulated); parameter gradients accumulate, including aux_grad_scale times
  // the gradient of the load-balance loss.
  virtual void backward(ParamTable<T> &params, const T *x, T *dy, T *dx, const BlockContext<T> &ctx,
                        double aux_grad_scale) = 0;
  // The unweighted load-balance loss of the last training forward (0 without a router).
  virtual double aux_loss() const { return 0.0; }
  // Statistics of the last forward; false when the block routes nothing.
  virtual bool router_stats(RouterStats *) const { return false; }
  // The width (kv heads x head_dim) of each key/value cache slot this block decodes with.
  virtual std::vector<int64_t> cache_widths() const = 0;
  // The per-token gates of the last forward, [N, *width]: MoAS the router softmax over its branches (before
  // dropout; 1/S for static), MoH the gate of every head (0 where a head is inactive). Empty (width 0) without
  // routing.
  virtual std::vector<T> gates(int64_t *width) const {
    *width = 0;
    return {};
  }
};

// The block a layer's config asks for, its tensors registered under `prefix` (e.g. "transformer.h.3.attn.").
template <typename T>
std::unique_ptr<AttentionBlock<T>> make_attention_block(const ModelConfig &config, ParamTable<T> &params,
                                                        const std::string &prefix);

}  // namespace moas
