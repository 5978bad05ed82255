#include "cuda_layer.hpp"

namespace moas {

CudaLayer::CudaLayer(const moas_cuda_backend &t, int32_t device_index, AttentionLayer<float> &mirror)
    : t_(t),
      device_index_(device_index),
      mirror_(mirror),
      config_(mirror.config()),
      // The device is chosen before anything is allocated.
      block_((device_check(t, t.set_device(device_index), "set_device"),
              make_cuda_attention(t, config_, mirror.params, "attn."))),
      params_(t, mirror.params, mirror.optimizer) {
  rope_.build(t, config_);
}

CudaContext CudaLayer::context(float dropout) const {
  CudaContext ctx;
  ctx.batch = B_;
  ctx.seq = Tn_;
  ctx.pos = pos_.get();
  ctx.begin = begin_.get();
  rope_.fill(&ctx);
  ctx.dropout = dropout;
  ctx.attn_dropout = config_.attn_dropout;
  ctx.seed = config_.seed;
  ctx.step = dropout_step_;
  return ctx;
}

void CudaLayer::forward(const float *x, float *y, int64_t B, int64_t Tn, bool training) {
  const int64_t n = B * Tn * config_.n_embd;
  backward_ready_ = false;
  B_ = B;
  Tn_ = Tn;
  upload_positions(t_, B, Tn, 0, &pos_, &begin_);
  dropout_step_ = training_forwards_;
  x_.upload(t_, x, n);
  out_.reserve(t_, n);
  block_->forward(params_.values(), x_.get(), out_.get(), context(training ? config_.dropout : 0.0f), training);
  if (mirror_.residual()) device_check(t_, t_.add(out_.get(), x_.get(), out_.get(), n, nullptr), "add");
  out_.download(y, n);
  if (training) {
    training_forwards_++;
    backward_ready_ = true;
  }
}

void CudaLayer::backward(const float *dy, float *dx) {
  const int64_t n = B_ * Tn_ * config_.n_embd;
  d_out_.upload(t_, dy, n);  // the block clobbers it
  if (mirror_.residual()) {
    dx_.upload(t_, dy, n);
  } else {
    dx_.reserve(t_, n);
    dx_.zero(n);
  }
  block_->backward(params_.values(), params_.grads(), x_.get(), d_out_.get(), dx_.get(), context(config_.dropout),
                   config_.aux_weight());
  dx_.download(dx, n);
  backward_ready_ = false;
}

}  // namespace moas
