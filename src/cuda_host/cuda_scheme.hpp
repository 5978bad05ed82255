// One attention scheme (MHA, GQA, MQA) on a CUDA device: Scheme (scheme.hpp) step for step, for every token (a plain
// scheme block) or for a routed subset of query tokens (a MoAS top-1 branch) — the [q; k; v] projection (fused for
// every token; q of the routed rows and k, v of every token otherwise), RoPE, attention (CoPE's kernel with CoPE, the
// window from the config), c_proj and its dropout.
#pragma once

#include <cstdint>
#include <string>

#include "attention/scheme.hpp"
#include "cuda_host/cuda_attend.hpp"
#include "cuda_host/cuda_attention.hpp"
#include "cuda_host/device_array.hpp"

namespace moas {

// The query tokens of a scheme on the device (RowSet's twin; device arrays, the caller's to keep until backward):
// m rows; row [m] their token indices (null when all), pos [m] and begin [batch + 1] as the attention descriptors
// read them. all: every token in order, as RowSet::all, which takes the fused projection.
struct CudaRows {
  int64_t m = 0;
  const int64_t *row = nullptr;
  const int32_t *pos = nullptr;
  const int64_t *begin = nullptr;
  bool all = true;
};

class CudaScheme final : public CudaAttention {
 public:
  // A plain scheme block: the config's kv heads, the plain dropout sites.
  CudaScheme(const moas_cuda_backend &t, const ModelConfig &config, const ParamTable<float> &params,
             const std::string &prefix);
  // A MoAS branch: kv_heads of its own, dropout sites of branch `dropout_branch` (branch_site).
  CudaScheme(const moas_cuda_backend &t, const ModelConfig &config, const ParamTable<float> &params,
             const std::string &prefix, int64_t kv_heads, uint32_t dropout_branch);

  void forward(const float *values, const float *x, float *y, const CudaContext &ctx, bool training) override;
  void backward(const float *values, float *grads, const float *x, float *dy, float *dx, const CudaContext &ctx,
                double aux_grad_scale) override;

  // Scheme::forward / backward: x [N, C] of every token; z, dz [rows.m, C] of the query tokens `rows`; dx [N, C]
  // accumulated.
  void forward_rows(const float *values, const float *x, const CudaRows &rows, float *z, const CudaContext &ctx);
  void backward_rows(const float *values, float *grads, const float *x, float *dz, float *dx, const CudaContext &ctx);

 private:
  moas_cuda_attention_dims dims(const CudaContext &ctx) const;
  moas_cuda_key_values key_values(const CudaContext &ctx) const;
  moas_cuda_dropout probs_dropout(const CudaContext &ctx) const;
  void rope(float *buf, int64_t stride, int64_t n_heads, int64_t m, const int32_t *pos, const CudaContext &ctx,
            int32_t direction) const;

  const moas_cuda_backend &t_;
  SchemeShape shape_;
  uint32_t branch_;
  CudaAttend attend_;
  int64_t qkv_w_, qkv_b_, proj_w_, proj_b_;  // offsets; -1 where absent

  // Last forward. All rows: qkv_ is the fused [N, W] projection. Routed: qkv_ holds q [m, H d] of the query tokens
  // and kv_ [N, 2 Hkv d] every token's keys and values; x_rows_ [m, C] the query tokens' inputs.
  CudaRows rows_;
  DeviceArray<float> qkv_, kv_, x_rows_, att_, lse_;  // att_ [m, C], lse_ [H, m]
  DeviceArray<moas_cuda_query_head> heads_;           // per head: views into qkv_, att_, lse_
  // Backward scratch (d_qkv_ and d_kv_ laid out like qkv_ and kv_).
  DeviceArray<float> d_att_, d_qkv_, d_kv_, d_x_rows_;
  DeviceArray<moas_cuda_query_head_grad> head_grads_;
};

}  // namespace moas
