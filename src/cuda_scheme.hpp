// One attention scheme (MHA, GQA, MQA) on a CUDA device: Scheme (scheme.hpp) for every token, step for step — the
// fused [q; k; v] projection, RoPE, attention (CoPE's kernel with CoPE, the window from the config), c_proj and its
// dropout.
#pragma once

#include <cstdint>
#include <string>

#include "cuda_attention.hpp"
#include "device_array.hpp"
#include "scheme.hpp"

namespace moas {

class CudaScheme final : public CudaAttention {
 public:
  CudaScheme(const moas_cuda_backend &t, const ModelConfig &config, const ParamTable<float> &params,
             const std::string &prefix);

  void forward(const float *values, const float *x, float *y, const CudaContext &ctx, bool training) override;
  void backward(const float *values, float *grads, const float *x, float *dy, float *dx, const CudaContext &ctx,
                double aux_grad_scale) override;

 private:
  moas_cuda_attention_dims dims(const CudaContext &ctx) const;
  moas_cuda_key_values key_values(const CudaContext &ctx) const;
  int64_t qkv_width() const { return shape_.qkv_width(); }

  const moas_cuda_backend &t_;
  SchemeShape shape_;
  int64_t window_, cope_max_pos_;
  int64_t qkv_w_, qkv_b_, proj_w_, proj_b_, cope_;  // offsets; -1 where absent

  // Last forward.
  DeviceArray<float> qkv_, att_, lse_;             // [N, W], [N, C], [H, N]
  DeviceArray<moas_cuda_query_head> heads_;        // per head: views into qkv_, att_, lse_
  // Backward scratch.
  DeviceArray<float> d_att_, d_qkv_, cope_scratch_;
  DeviceArray<moas_cuda_query_head_grad> head_grads_;
};

}  // namespace moas
