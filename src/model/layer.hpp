// The attention layer on its own (SPEC §7, "the layer API"): one AttentionBlock — the same object a model's layers
// hold — with its parameters, AdamW moments and the state between a forward and its backward, applied to a caller's
// [B, T, C] activations. The caller owns embeddings and norms; with `residual` the layer returns x + Attn(x).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "attention/attention_block.hpp"
#include "config/config.hpp"
#include "ops/adamw.hpp"
#include "ops/params.hpp"
#include "ops/rope.hpp"
#include "ops/rows.hpp"

namespace moas {

template <typename T>
class AttentionLayer {
 public:
  // `config` describes the block as a one-layer model would (block_size = the longest sequence accepted).
  AttentionLayer(const ModelConfig &config, bool residual);
  // The names and shapes of `config`'s parameters, allocating none (see Model::parameter_infos).
  static std::vector<ParamInfo> parameter_infos(const ModelConfig &config);

  const ModelConfig &config() const { return config_; }
  bool residual() const { return residual_; }

  // x, y [B * Tn, C]; y may be x itself. training keeps a copy of x for backward and draws dropout masks. False when
  // the output is not finite: y is then untouched and the forward counts for nothing (no backward, no dropout draw).
  bool forward(const T *x, T *y, int64_t B, int64_t Tn, bool training);
  // dy [B * Tn, C] of the last training forward -> dx (overwritten); parameter gradients accumulate, the
  // load-balance loss's weighted by its lambda. dx may be dy itself.
  void backward(const T *dy, T *dx);
  bool can_backward() const { return backward_ready_; }
  // After weights change under them, the kept activations no longer belong to the parameters.
  void invalidate_activations() { backward_ready_ = false; }

  double aux_loss() const { return block_->aux_loss(); }
  bool router_stats(RouterStats *out) const { return block_->router_stats(out); }
  std::vector<T> gates(int64_t *width) const { return block_->gates(width); }
  int64_t last_tokens() const { return B_ * Tn_; }

  ParamTable<T> params;
  AdamWState<T> optimizer;
  uint64_t training_forwards = 0;  // keys the dropout masks; saved with the optimizer state (a CudaLayer advances it)

 private:
  BlockContext<T> context(float dropout) const;

  ModelConfig config_;
  bool residual_;
  std::unique_ptr<AttentionBlock<T>> block_;
  RopeTable<T> rope_;
  RowSet all_rows_;
  std::vector<T> x_, out_, d_out_;  // the kept input, the block's output, the gradient the block consumes
  int64_t B_ = 0, Tn_ = 0;
  uint64_t dropout_step_ = 0;
  bool backward_ready_ = false;
};

extern template class AttentionLayer<float>;
extern template class AttentionLayer<double>;

}  // namespace moas
