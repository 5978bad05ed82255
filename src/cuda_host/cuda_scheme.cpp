#include "cuda_host/cuda_scheme.hpp"

#include <vector>

#include "cuda_host/cuda_kv_cache.hpp"
#include "cuda_host/cuda_linear.hpp"

namespace moas {

CudaScheme::CudaScheme(const moas_cuda_backend &t, const ModelConfig &config, const ParamTable<float> &params,
                       const std::string &prefix)
    : CudaScheme(t, config, params, prefix, config.n_kv_head, 0) {}

// [q; k; v] is registered as c_attn (MHA) or q_proj, k_proj, v_proj back to back: one weight from its first tensor.
CudaScheme::CudaScheme(const moas_cuda_backend &t, const ModelConfig &config, const ParamTable<float> &params,
                       const std::string &prefix, int64_t kv_heads, uint32_t dropout_branch)
    : t_(t),
      shape_{config.n_embd, config.n_head, kv_heads, config.bias},
      branch_(dropout_branch),
      attend_(config, params, prefix) {
  const bool fused = params.contains(prefix + "c_attn.weight");
  qkv_w_ = params.find(prefix + (fused ? "c_attn.weight" : "q_proj.weight")).offset;
  qkv_b_ = params.offset_if_present(prefix + (fused ? "c_attn.bias" : "q_proj.bias"));
  proj_w_ = params.find(prefix + "c_proj.weight").offset;
  proj_b_ = params.offset_if_present(prefix + "c_proj.bias");
}

moas_cuda_attention_dims CudaScheme::dims(const CudaContext &ctx) const {
  return {ctx.batch, ctx.key_length(), shape_.heads, shape_.kv_heads, shape_.head_dim(), 0};
}

// Keys and values are column blocks of the fused projection, or of kv_ for routed rows, as Scheme::key_values.
moas_cuda_key_values CudaScheme::key_values(const CudaContext &ctx) const {
  const int64_t KV = shape_.kv_width();
  const float *k = rows_.all ? qkv_.get() + shape_.q_width() : kv_.get();
  const int64_t stride = rows_.all ? shape_.qkv_width() : 2 * KV;
  return {k, stride, k + KV, stride, ctx.seq, 0};
}

moas_cuda_dropout CudaScheme::probs_dropout(const CudaContext &ctx) const {
  return ctx.attn_dropout ? ctx.site(branch_site(DropoutSiteId::AttentionProbs, branch_)) : moas_cuda_dropout{0, 0};
}

void CudaScheme::rope(float *buf, int64_t stride, int64_t n_heads, int64_t m, const int32_t *pos,
                      const CudaContext &ctx, int32_t direction) const {
  if (!ctx.rope_cos) return;
  device_check(
      t_,
      t_.rope_rotate(buf, stride, 0, n_heads, m, pos, ctx.rope_cos, ctx.rope_sin, ctx.rope_half, direction, nullptr),
      "rope_rotate");
}

void CudaScheme::forward(const float *values, const float *x, float *z, const CudaContext &ctx, bool) {
  forward_rows(values, x, CudaRows{ctx.tokens(), nullptr, ctx.pos, ctx.begin, true}, z, ctx);
}

void CudaScheme::backward(const float *values, float *grads, const float *x, float *dz, float *dx,
                          const CudaContext &ctx, double) {
  backward_rows(values, grads, x, dz, dx, ctx);
}

void CudaScheme::forward_rows(const float *values, const float *x, const CudaRows &rows, float *z,
                              const CudaContext &ctx) {
  const int64_t N = ctx.tokens(), m = rows.m, C = shape_.width, H = shape_.heads, Hkv = shape_.kv_heads;
  const int64_t d = shape_.head_dim(), Q = shape_.q_width(), KV = 2 * shape_.kv_width(), W = shape_.qkv_width();
  const float *w = values + qkv_w_, *bias = qkv_b_ < 0 ? nullptr : values + qkv_b_;
  rows_ = rows;
  const int64_t q_stride = rows.all ? W : Q;
  if (rows.all) {
    qkv_.reserve(t_, N * W);
    cuda_linear_forward(t_, qkv_.get(), W, x, w, bias, N, C, W);
    rope(qkv_.get(), W, H + Hkv, N, rows.pos, ctx, +1);
  } else {
    qkv_.reserve(t_, m * Q);
    kv_.reserve(t_, N * KV);
    x_rows_.reserve(t_, m * C);
    device_check(t_, t_.gather_rows(x_rows_.get(), C, x, C, rows.row, rows.begin + ctx.batch, m, C, nullptr),
                 "gather_rows");
    cuda_linear_forward(t_, qkv_.get(), Q, x_rows_.get(), w, bias, m, C, Q);
    cuda_linear_forward(t_, kv_.get(), KV, x, w + Q * C, bias ? bias + Q : nullptr, N, C, KV);
    rope(qkv_.get(), Q, H, m, rows.pos, ctx, +1);
    rope(kv_.get(), KV, Hkv, N, ctx.pos, ctx, +1);
  }
  att_.reserve(t_, m * C);
  lse_.reserve(t_, H * m);
  std::vector<moas_cuda_query_head> heads;
  for (int64_t h = 0; h < H; h++)
    heads.push_back({h, rows.pos, rows.begin, qkv_.get() + h * d, q_stride, att_.get() + h * d, C, lse_.get() + h * m});
  heads_.upload(t_, heads.data(), H);
  moas_cuda_key_values kv = key_values(ctx);
  if (ctx.cache) {  // decoding: append this forward's keys and values, then attend over everything cached
    cache_write(*ctx.cache, branch_, kv.k, kv.k_stride, kv.v, kv.v_stride, ctx.batch, ctx.seq, ctx.past);
    kv = cached_key_values(*ctx.cache, branch_);
  }
  const moas_cuda_attention_dims dm = dims(ctx);
  const moas_cuda_dropout drop = probs_dropout(ctx);
  attend_.forward(t_, values, dm, kv, heads_.get(), H, drop);
  cuda_linear_forward(t_, z, C, att_.get(), values + proj_w_, proj_b_ < 0 ? nullptr : values + proj_b_, m, C, C);
  const moas_cuda_dropout out_drop = ctx.site(branch_site(DropoutSiteId::AttentionOut, branch_));
  device_check(t_, t_.dropout_apply(z, m, C, rows.all ? nullptr : rows.row, &out_drop, nullptr), "dropout");
}

void CudaScheme::backward_rows(const float *values, float *grads, const float *x, float *dz, float *dx,
                               const CudaContext &ctx) {
  const CudaRows &rows = rows_;
  const int64_t N = ctx.tokens(), m = rows.m, C = shape_.width, H = shape_.heads, Hkv = shape_.kv_heads;
  const int64_t d = shape_.head_dim(), Q = shape_.q_width(), KV = 2 * shape_.kv_width(), W = shape_.qkv_width();
  auto grad = [&](int64_t offset) { return offset < 0 ? nullptr : grads + offset; };
  const float *w = values + qkv_w_;
  float *dw = grads + qkv_w_, *dbias = grad(qkv_b_);
  d_att_.reserve(t_, m * C);
  head_grads_.reserve(t_, H);

  const moas_cuda_dropout out_drop = ctx.site(branch_site(DropoutSiteId::AttentionOut, branch_));
  device_check(t_, t_.dropout_apply(dz, m, C, rows.all ? nullptr : rows.row, &out_drop, nullptr), "dropout");
  cuda_linear_backward(t_, d_att_.get(), false, grads + proj_w_, grad(proj_b_), dz, att_.get(), values + proj_w_, m, C,
                       C);

  float *dq, *dk;
  int64_t dq_stride, dk_stride;
  if (rows.all) {
    d_qkv_.reserve(t_, N * W);
    dq = d_qkv_.get(), dk = d_qkv_.get() + Q, dq_stride = dk_stride = W;
  } else {
    d_qkv_.reserve(t_, m * Q);
    d_kv_.reserve(t_, N * KV);
    dq = d_qkv_.get(), dk = d_kv_.get(), dq_stride = Q, dk_stride = KV;
  }
  std::vector<moas_cuda_query_head_grad> head_grads;
  for (int64_t h = 0; h < H; h++) head_grads.push_back({d_att_.get() + h * d, C, dq + h * d, dq_stride});
  head_grads_.upload(t_, head_grads.data(), H);
  const moas_cuda_key_value_grads dkv{dk, dk_stride, dk + Hkv * d, dk_stride};
  const moas_cuda_attention_dims dm = dims(ctx);
  const moas_cuda_key_values kv = key_values(ctx);
  const moas_cuda_dropout drop = probs_dropout(ctx);
  attend_.backward(t_, values, grads, dm, kv, heads_.get(), head_grads_.get(), H, dkv, drop);

  if (rows.all) {
    rope(dq, W, H + Hkv, N, rows.pos, ctx, -1);
    cuda_linear_backward(t_, dx, true, dw, dbias, dq, x, w, N, C, W);
    return;
  }
  rope(dq, Q, H, m, rows.pos, ctx, -1);
  rope(dk, KV, Hkv, N, ctx.pos, ctx, -1);
  d_x_rows_.reserve(t_, m * C);
  cuda_linear_backward(t_, d_x_rows_.get(), false, dw, dbias, dq, x_rows_.get(), w, m, C, Q);
  device_check(t_,
               t_.scatter_add_rows(dx, C, d_x_rows_.get(), C, rows.row, nullptr, rows.begin + ctx.batch, m, C, nullptr),
               "scatter_add_rows");
  cuda_linear_backward(t_, dx, true, dw + Q * C, dbias ? dbias + Q : nullptr, dk, x, w + Q * C, N, C, KV);
}

}  // namespace moas
