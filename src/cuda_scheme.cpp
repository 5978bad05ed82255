#include "cuda_scheme.hpp"

#include <vector>

#include "cuda_linear.hpp"

namespace moas {

// [q; k; v] is registered as c_attn (MHA) or q_proj, k_proj, v_proj back to back: one weight from its first tensor.
CudaScheme::CudaScheme(const moas_cuda_backend &t, const ModelConfig &config, const ParamTable<float> &params,
                       const std::string &prefix)
    : t_(t),
      shape_{config.n_embd, config.n_head, config.n_kv_head, config.bias},
      window_(config.window),
      cope_max_pos_(config.cope_max_pos) {
  const bool fused = params.contains(prefix + "c_attn.weight");
  qkv_w_ = params.find(prefix + (fused ? "c_attn.weight" : "q_proj.weight")).offset;
  qkv_b_ = params.offset_if_present(prefix + (fused ? "c_attn.bias" : "q_proj.bias"));
  proj_w_ = params.find(prefix + "c_proj.weight").offset;
  proj_b_ = params.offset_if_present(prefix + "c_proj.bias");
  cope_ = params.offset_if_present(prefix + "cope.weight");
}

moas_cuda_attention_dims CudaScheme::dims(const CudaContext &ctx) const {
  return {ctx.batch, ctx.seq, shape_.heads, shape_.kv_heads, shape_.head_dim(), window_};
}

// Keys and values are column blocks of the fused projection, as Scheme::key_values has them.
moas_cuda_key_values CudaScheme::key_values(const CudaContext &ctx) const {
  const int64_t Q = shape_.q_width(), KV = shape_.kv_width(), W = qkv_width();
  return {qkv_.get() + Q, W, qkv_.get() + Q + KV, W, ctx.seq, 0};
}

void CudaScheme::forward(const float *values, const float *x, float *z, const CudaContext &ctx, bool) {
  const int64_t N = ctx.tokens(), C = shape_.width, H = shape_.heads, Hkv = shape_.kv_heads, d = shape_.head_dim();
  const int64_t W = qkv_width();
  const float *w = values + qkv_w_, *bias = qkv_b_ < 0 ? nullptr : values + qkv_b_;
  qkv_.reserve(t_, N * W);
  att_.reserve(t_, N * C);
  lse_.reserve(t_, H * N);
  cuda_linear_forward(t_, qkv_.get(), W, x, w, bias, N, C, W);
  if (ctx.rope_cos)
    device_check(t_,
                 t_.rope_rotate(qkv_.get(), W, 0, H + Hkv, N, ctx.pos, ctx.rope_cos, ctx.rope_sin, ctx.rope_half, +1,
                                nullptr),
                 "rope_rotate");
  std::vector<moas_cuda_query_head> heads;
  for (int64_t h = 0; h < H; h++)
    heads.push_back({h, ctx.pos, ctx.begin, qkv_.get() + h * d, W, att_.get() + h * d, C, lse_.get() + h * N});
  heads_.upload(t_, heads.data(), H);
  const moas_cuda_attention_dims dm = dims(ctx);
  const moas_cuda_key_values kv = key_values(ctx);
  const moas_cuda_dropout drop = ctx.attn_dropout ? ctx.site(branch_site(DropoutSiteId::AttentionProbs, 0))
                                                  : moas_cuda_dropout{0.0f, 0};
  if (cope_ >= 0)
    device_check(t_,
                 t_.cope_attention_forward(&dm, &kv, heads_.get(), H, values + cope_, cope_max_pos_, &drop, nullptr),
                 "cope_attention_forward");
  else
    device_check(t_, t_.attention_forward(&dm, &kv, heads_.get(), H, &drop, nullptr), "attention_forward");
  cuda_linear_forward(t_, z, C, att_.get(), values + proj_w_, proj_b_ < 0 ? nullptr : values + proj_b_, N, C, C);
  const moas_cuda_dropout out_drop = ctx.site(branch_site(DropoutSiteId::AttentionOut, 0));
  device_check(t_, t_.dropout_apply(z, N, C, nullptr, &out_drop, nullptr), "dropout");
}

void CudaScheme::backward(const float *values, float *grads, const float *x, float *dz, float *dx,
                          const CudaContext &ctx, double) {
  const int64_t N = ctx.tokens(), C = shape_.width, H = shape_.heads, Hkv = shape_.kv_heads, d = shape_.head_dim();
  const int64_t Q = shape_.q_width(), KV = shape_.kv_width(), W = qkv_width();
  auto grad = [&](int64_t offset) { return offset < 0 ? nullptr : grads + offset; };
  d_att_.reserve(t_, N * C);
  d_qkv_.reserve(t_, N * W);
  head_grads_.reserve(t_, H);

  const moas_cuda_dropout out_drop = ctx.site(branch_site(DropoutSiteId::AttentionOut, 0));
  device_check(t_, t_.dropout_apply(dz, N, C, nullptr, &out_drop, nullptr), "dropout");
  cuda_linear_backward(t_, d_att_.get(), false, grads + proj_w_, grad(proj_b_), dz, att_.get(), values + proj_w_, N,
                       C, C);

  std::vector<moas_cuda_query_head_grad> head_grads;
  for (int64_t h = 0; h < H; h++) head_grads.push_back({d_att_.get() + h * d, C, d_qkv_.get() + h * d, W});
  head_grads_.upload(t_, head_grads.data(), H);
  const moas_cuda_key_value_grads dkv{d_qkv_.get() + Q, W, d_qkv_.get() + Q + KV, W};
  const moas_cuda_attention_dims dm = dims(ctx);
  const moas_cuda_key_values kv = key_values(ctx);
  const moas_cuda_dropout drop = ctx.attn_dropout ? ctx.site(branch_site(DropoutSiteId::AttentionProbs, 0))
                                                  : moas_cuda_dropout{0.0f, 0};
  if (cope_ >= 0) {
    cope_scratch_.reserve(t_, ctx.batch * H * cope_max_pos_ * d);
    device_check(t_,
                 t_.cope_attention_backward(&dm, &kv, heads_.get(), head_grads_.get(), H, &dkv, values + cope_,
                                            cope_max_pos_, grads + cope_, cope_scratch_.get(), &drop, nullptr),
                 "cope_attention_backward");
  } else {
    device_check(t_, t_.attention_backward(&dm, &kv, heads_.get(), head_grads_.get(), H, &dkv, &drop, nullptr),
                 "attention_backward");
  }
  if (ctx.rope_cos)
    device_check(t_,
                 t_.rope_rotate(d_qkv_.get(), W, 0, H + Hkv, N, ctx.pos, ctx.rope_cos, ctx.rope_sin, ctx.rope_half,
                                -1, nullptr),
                 "rope_rotate");
  cuda_linear_backward(t_, dx, true, grads + qkv_w_, grad(qkv_b_), d_qkv_.get(), x, values + qkv_w_, N, C, W);
}

}  // namespace moas
