// The attention layer (layer.hpp) on a CUDA device: the same CudaAttention block a CUDA model's layers hold, its
// parameters, gradients and AdamW moments in device memory, applied to the caller's host [B, T, C] activations (copied
// in and out per call). The host AttentionLayer<float> it is made from is its mirror, as a CudaModel's Model<float>:
// names, layout and initial values, and the parameter and gradient reads and writes of the C ABI.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cuda_host/cuda_attention.hpp"
#include "cuda_host/cuda_positions.hpp"
#include "cuda_host/device_parameters.hpp"
#include "model/layer.hpp"

namespace moas {

class CudaLayer {
 public:
  CudaLayer(const moas_cuda_backend &t, int32_t device_index, AttentionLayer<float> &mirror);

  // Makes this layer's device and matmul precision the calling thread's (bind_device).
  void use_device() const { bind_device(t_, device_index_, config_.matmul_precision); }

  // AttentionLayer's forward and backward, on host buffers (forward: false, y untouched, when y would not be finite).
  bool forward(const float *x, float *y, int64_t B, int64_t Tn, bool training);
  void backward(const float *dy, float *dx);
  bool can_backward() const { return backward_ready_; }
  void invalidate_activations() { backward_ready_ = false; }
  double aux_loss() const { return block_->aux_loss(); }
  bool router_stats(RouterStats *out) const { return block_->router_stats(out); }
  std::vector<float> gates(int64_t *width) const { return block_->gates(width); }
  int64_t last_tokens() const { return positions_.batch() * positions_.seq(); }

  DeviceParameters &parameters() { return params_; }
  // Mirror <-> device (the C ABI's reads and writes by name go through the mirror).
  void download_values() const { params_.download_values(mirror_.params); }
  void download_grads() const { params_.download_grads(mirror_.params); }
  void upload_values() {
    params_.upload_values(mirror_.params);
    backward_ready_ = false;
  }
  void upload_grads() { params_.upload_grads(mirror_.params); }
  void download_optimizer() { params_.download_optimizer(mirror_.optimizer); }
  void upload_optimizer() { params_.upload_optimizer(mirror_.optimizer); }

 private:
  const moas_cuda_backend &t_;
  int32_t device_index_;
  AttentionLayer<float> &mirror_;
  const ModelConfig config_;
  std::unique_ptr<CudaAttention> block_;
  DeviceParameters params_;
  DevicePositions positions_;  // of the last forward
  DeviceArray<float> x_, out_, d_out_, dx_;  // the kept input, the block's output, its gradient, dx
  std::vector<float> host_out_;              // the output, checked finite before it reaches the caller's y
  uint64_t dropout_step_ = 0;
  bool backward_ready_ = false;
};

}  // namespace moas
