#include "cuda_host/cuda_layer.hpp"

#include <algorithm>

#include "base/finite.hpp"

namespace moas {

CudaLayer::CudaLayer(const moas_cuda_backend &t, int32_t device_index, AttentionLayer<float> &mirror)
    : t_(t),
      device_index_(device_index),
      mirror_(mirror),
      config_(mirror.config()),
      // The device is chosen before anything is allocated.
      block_((bind_device(t, device_index, config_.matmul_precision),
              make_cuda_attention(t, config_, mirror.params, "attn."))),
      params_(t, mirror.params, mirror.optimizer),
      positions_(t, config_) {}

bool CudaLayer::forward(const float *x, float *y, int64_t B, int64_t Tn, bool training) {
  const int64_t n = B * Tn * config_.n_embd;
  backward_ready_ = false;
  positions_.set(B, Tn, 0);
  dropout_step_ = mirror_.training_forwards;
  x_.upload(t_, x, n);
  out_.reserve(t_, n);
  block_->forward(params_.values(), x_.get(), out_.get(),
                  positions_.context(config_, training ? config_.dropout : 0.0f, dropout_step_, 0), training);
  if (mirror_.residual()) device_check(t_, t_.add(out_.get(), x_.get(), out_.get(), n, nullptr), "add");
  host_out_.resize((size_t)n);
  out_.download(host_out_.data(), n);
  if (!all_finite(host_out_.data(), host_out_.size())) return false;
  std::copy(host_out_.begin(), host_out_.end(), y);
  if (training) {
    mirror_.training_forwards++;
    backward_ready_ = true;
  }
  return true;
}

void CudaLayer::backward(const float *dy, float *dx) {
  const int64_t n = last_tokens() * config_.n_embd;
  d_out_.upload(t_, dy, n);  // the block clobbers it
  if (mirror_.residual()) {
    dx_.upload(t_, dy, n);
  } else {
    dx_.reserve(t_, n);
    dx_.zero(n);
  }
  block_->backward(params_.values(), params_.grads(), x_.get(), d_out_.get(), dx_.get(),
                   positions_.context(config_, config_.dropout, dropout_step_, 0), config_.aux_weight());
  dx_.download(dx, n);
  backward_ready_ = false;
}

}  // namespace moas
