#include "model/layer.hpp"

#include <algorithm>

#include "base/finite.hpp"
#include "base/parallel.hpp"
#include "ops/init.hpp"

namespace moas {

template <typename T>
AttentionLayer<T>::AttentionLayer(const ModelConfig &config, bool residual) : config_(config), residual_(residual) {
  block_ = make_attention_block<T>(config_, params, "attn.");
  params.allocate();
  initialise_parameters(params, 1, config_.seed);
  if (config_.position == PositionKind::Rope)
    rope_.configure(config_.block_size, config_.head_dim(), config_.rope_base);
}

template <typename T>
std::vector<ParamInfo> AttentionLayer<T>::parameter_infos(const ModelConfig &config) {
  ParamTable<T> table;
  make_attention_block<T>(config, table, "attn.");
  return table.infos();
}

template <typename T>
BlockContext<T> AttentionLayer<T>::context(float dropout) const {
  BlockContext<T> ctx;
  ctx.batch = B_;
  ctx.seq = Tn_;
  ctx.all_rows = &all_rows_;
  ctx.rope = config_.position == PositionKind::Rope ? &rope_ : nullptr;
  ctx.dropout = dropout;
  ctx.attn_dropout = config_.attn_dropout;
  ctx.seed = config_.seed;
  ctx.step = dropout_step_;
  return ctx;
}

template <typename T>
bool AttentionLayer<T>::forward(const T *x, T *y, int64_t B, int64_t Tn, bool training) {
  const int64_t n = B * Tn * config_.n_embd;
  backward_ready_ = false;
  B_ = B;
  Tn_ = Tn;
  all_rows_.set_all(B, Tn);
  rope_.cover(Tn);
  dropout_step_ = training_forwards;
  // The block reads x again in backward, and the caller may reuse its buffer (or pass y == x) meanwhile.
  x_.assign(x, x + n);
  out_.resize((size_t)n);
  block_->forward(params, x_.data(), out_.data(), context(training ? config_.dropout : 0.0f), training);
  T *out = out_.data();
  if (residual_) {
    const T *kept = x_.data();
    parallel_for(n, n >= kParallelGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; i++) out[i] += kept[i];
    });
  }
  // y (possibly x itself) is written only with a finite result: a failed call leaves the caller's buffers alone.
  if (!all_finite(out, (size_t)n)) return false;
  std::copy(out_.begin(), out_.end(), y);
  if (training) {
    training_forwards++;
    backward_ready_ = true;
  }
  return true;
}

template <typename T>
void AttentionLayer<T>::backward(const T *dy, T *dx) {
  const int64_t n = B_ * Tn_ * config_.n_embd;
  d_out_.assign(dy, dy + n);  // the block clobbers its dy; the caller's stays intact (and may alias dx)
  if (!residual_) std::fill(dx, dx + n, T(0));
  else if (dx != dy) std::copy(dy, dy + n, dx);
  block_->backward(params, x_.data(), d_out_.data(), dx, context(config_.dropout), config_.aux_weight());
  backward_ready_ = false;
}

template class AttentionLayer<float>;
template class AttentionLayer<double>;

}  // namespace moas
