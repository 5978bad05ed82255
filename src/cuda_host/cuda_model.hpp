// The model of model.hpp on a CUDA device. Parameters, gradients, AdamW moments and activations live in device
// memory, and each step is an entry of the backend table (cuda_backend.h) — the CUDA twin of the CPU function that
// Model<float> calls at the same point, in the same order (cuda_model.cpp reads side by side with model.cpp, each
// layer's attention block (cuda_attention.hpp) with its CPU class). Plain C++: it only calls the table, so the tests
// run it on a table of CPU functions and compare it with Model<float> step by step.
//
// A host Model<float> is its mirror: it holds the names, layout and initial values of the parameters, the dropout
// step counter and the optimiser's step count. Parameter and gradient reads, writes and checkpoints go through the
// mirror, after download() / before upload().
//
// This version runs one attention scheme (MHA, GQA, MQA), MoAS (static, soft, top-1) or MoH (every head strategy)
// with learned, RoPE or CoPE positions and sliding windows, LayerNorm / RMSNorm, GELU / SwiGLU, biases and every
// dropout site; training and evaluation forwards, backward and AdamW; decoding with a KV cache in device memory
// (cuda_kv_cache.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <memory>

#include "config/config.hpp"
#include "cuda_host/cuda_attention.hpp"
#include "cuda_host/cuda_backend.h"
#include "cuda_host/cuda_kv_cache.hpp"
#include "cuda_host/cuda_positions.hpp"
#include "cuda_host/device_array.hpp"
#include "cuda_host/device_parameters.hpp"
#include "model/model.hpp"
#include "ops/adamw.hpp"

namespace moas {

class CudaModel {
 public:
  // Uploads the mirror's parameters to device `device_index` of the table.
  CudaModel(const moas_cuda_backend &table, int32_t device_index, Model<float> &mirror);

  // Makes this model's device and matmul precision the calling thread's (bind_device). The C ABI does this at every
  // entry.
  void use_device() const { bind_device(t_, device_index_, config_.matmul_precision); }

  // Model<float>::forward's contract; advances the mirror's dropout step after a training forward. With a cache
  // (eval), the tokens continue its sequences at position cache->length and their keys and values join it.
  double forward(const int32_t *tokens, const int32_t *targets, int64_t B, int64_t Tn, bool training,
                 CudaKvCache *cache = nullptr);
  // Model::allocate_cache's layout (the mirror's slot widths) in this model's device memory.
  void allocate_cache(CudaKvCache *cache, int64_t batch, int64_t capacity) const;
  // Accumulates the gradients of the last training forward (with targets) on the device.
  void backward();
  bool can_backward() const { return backward_ready_; }
  void invalidate_activations() { backward_ready_ = false; }
  void zero_grad() { params_.zero_grads(); }
  // The global L2 norm of the gradients (adamw.hpp's gradient_norm), then one AdamW step with it (the caller has
  // checked it is finite), counted in the mirror's optimiser state; false (and nothing changed) when the step would
  // leave a value or moment non-finite.
  double gradient_norm() { return params_.gradient_norm(); }
  bool adamw_step(const AdamWSettings &settings, double grad_norm);
  // Whether every logit of the last forward is finite.
  bool logits_finite();

  // The last forward's logits [B * Tn, V] into out.
  void logits(float *out) const;
  // The last position's logits of each sequence of the last forward, [B, V] into out: what decoding samples from,
  // gathered on the device so that only these rows are downloaded.
  void last_logits(float *out);
  // The unweighted load-balance loss of the last training forward, mean over the routed layers.
  double aux_loss() const { return aux_; }
  // Layer `layer`'s router statistics of the last forward (Model::router_stats); false without a router.
  bool router_stats(int64_t layer, RouterStats *out) const { return attn_[(size_t)layer]->router_stats(out); }
  // Layer `layer`'s per-token gates of the last forward (Model::gates).
  std::vector<float> gates(int64_t layer, int64_t *width) const { return attn_[(size_t)layer]->gates(width); }
  int64_t last_batch() const { return positions_.batch(); }
  int64_t last_seq() const { return positions_.seq(); }

  // Mirror <-> device: parameter values, gradients, and the optimiser's moments.
  void download_values() { params_.download_values(mirror_.params); }
  void download_grads() { params_.download_grads(mirror_.params); }
  void download_optimizer() { params_.download_optimizer(mirror_.optimizer); }
  void upload_grads() { params_.upload_grads(mirror_.params); }
  void upload_values() {
    params_.upload_values(mirror_.params);
    backward_ready_ = false;
  }
  void upload_optimizer() { params_.upload_optimizer(mirror_.optimizer); }

 private:
  struct LayerParams {  // offsets into the flat parameter buffer; -1 where absent (attention: attn_)
    int64_t ln1_w, ln1_b, ln2_w, ln2_b, fc_w, fc_b, mproj_w, mproj_b;
  };
  struct LayerActivations {
    DeviceArray<float> ln1, ln1_mean, ln1_rstd, mid, ln2, ln2_mean, ln2_rstd, fc_pre, fc_act;
  };

  void find_parameters();
  void reserve_buffers(int64_t N, bool training);
  const float *w(int64_t offset) const { return offset < 0 ? nullptr : params_.values() + offset; }
  float *g(int64_t offset) const { return offset < 0 ? nullptr : params_.grads() + offset; }
  CudaContext context(uint32_t layer, float p, CudaKvCache *cache = nullptr) const;
  int64_t aux_layers() const;

  const moas_cuda_backend &t_;
  int32_t device_index_;
  Model<float> &mirror_;
  const ModelConfig config_;
  std::vector<LayerParams> layers_;
  std::vector<std::unique_ptr<CudaAttention>> attn_;
  int64_t wte_ = -1, wpe_ = -1, lnf_w_ = -1, lnf_b_ = -1;
  DeviceParameters params_;
  DevicePositions positions_;  // of the last forward

  // The last forward.
  std::vector<LayerActivations> acts_;  // every layer when training, layer 0's reused in eval
  std::vector<DeviceArray<float>> residual_;
  DeviceArray<float> lnf_, lnf_mean_, lnf_rstd_, logits_, ce_lse_, scratch_c_, last_logits_;
  DeviceArray<int32_t> tokens_, targets_;
  DeviceArray<double> loss_;
  DeviceArray<int64_t> n_counted_;
  double aux_ = 0;
  int64_t counted_ = 0;
  uint64_t dropout_step_ = 0;
  bool has_targets_ = false, backward_ready_ = false;

  // Backward scratch.
  DeviceArray<float> d_res_, d_c_, d_ln_, d_hidden_, d_pre_, d_logits_, norm_scratch_;
};

}  // namespace moas
