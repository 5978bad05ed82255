#include "cuda_host/cuda_moh.hpp"

#include "attention/balance_loss.hpp"
#include "attention/moh.hpp"
#include "cuda_host/cuda_kv_cache.hpp"
#include "cuda_host/cuda_linear.hpp"
#include "ops/dropout.hpp"

namespace moas {

CudaMoh::CudaMoh(const moas_cuda_backend &t, const ModelConfig &config, const ParamTable<float> &params,
                 const std::string &prefix)
    : t_(t),
      shape_{config.n_embd, config.n_head, config.n_kv_head, config.bias},
      mixture_(config.heads.strategy == HeadStrategy::MixtureOfHeads),
      attend_(config, params, prefix) {
  const MohLayout layout = moh_layout(config);
  spec_ = layout.spec;
  dense_heads_ = layout.dense_heads;
  kv_computed_ = layout.kv_computed;
  // [q; k; v] is c_attn (MHA) or q_proj, k_proj, v_proj back to back: one weight from its first tensor.
  const bool fused = params.contains(prefix + "c_attn.weight");
  qkv_w_ = params.find(prefix + (fused ? "c_attn.weight" : "q_proj.weight")).offset;
  qkv_b_ = params.offset_if_present(prefix + (fused ? "c_attn.bias" : "q_proj.bias"));
  proj_w_ = params.find(prefix + "c_proj.weight").offset;
  proj_b_ = params.offset_if_present(prefix + "c_proj.bias");
  for (const char *router : {"wg.weight", "wg_0.weight", "wg_1.weight"}) {
    const int64_t offset = params.offset_if_present(prefix + router);
    if (offset < 0) continue;
    if (routers_ < 0) routers_ = offset;
    router_rows_ += params.find(prefix + router).shape[0];
  }
}

moas_cuda_moh_gate_spec CudaMoh::gate_spec() const {
  return {spec_.shared, spec_.routed, spec_.active, spec_.reference ? 1 : 0};
}

std::vector<std::array<int64_t, 3>> CudaMoh::dense_row_blocks() const {
  const int64_t d = shape_.head_dim(), Pd = dense_heads_ * d, KV = kv_computed_ * d, Q = shape_.q_width();
  return {{0, 0, Pd}, {Q, Pd, KV}, {Q + shape_.kv_width(), Pd + KV, KV}};
}

moas_cuda_attention_dims CudaMoh::dims(const CudaContext &ctx) const {
  return {ctx.batch, ctx.key_length(), shape_.heads, shape_.kv_heads, shape_.head_dim(), 0};
}

moas_cuda_key_values CudaMoh::key_values(const CudaContext &ctx) const {
  const int64_t F = dense_width(), k_col = query_columns(), v_col = k_col + kv_computed_ * shape_.head_dim();
  return {dense_.get() + k_col, F, dense_.get() + v_col, F, ctx.seq, 0};
}

moas_cuda_dropout CudaMoh::attention_dropout(const CudaContext &ctx) const {
  return ctx.attn_dropout ? ctx.site((uint32_t)DropoutSiteId::AttentionProbs) : moas_cuda_dropout{0.0f, 0};
}

// MohAttention::route: the routers' softmaxes, the top-K selection, every token's gates and each routed head's rows;
// in training the load-balance loss, from the routing downloaded.
void CudaMoh::route(const float *values, const float *x, const CudaContext &ctx, bool training) {
  const int64_t N = ctx.tokens(), C = shape_.width, H = shape_.heads, E = spec_.routed, S = spec_.shared;
  const int64_t R = router_rows_, type_column = E, shared_column = E + (spec_.head_type_router() ? 2 : 0);
  aux_ = 0;
  logits_.reserve(t_, N * R);
  r_.reserve(t_, N * E);
  selected_.reserve(t_, N * E);
  a_.reserve(t_, 2 * N);
  s_.reserve(t_, N * S);
  gate_.reserve(t_, N * H);
  if (R > 0) cuda_linear_forward(t_, logits_.get(), R, x, values + routers_, nullptr, N, C, R);
  auto softmax = [&](float *probs, int64_t column, int64_t width, uint8_t *selected, int64_t k) {
    device_check(t_,
                 t_.router_softmax(probs, width, logits_.get() + column, R, N, width, nullptr, selected, k, nullptr),
                 "router_softmax");
  };
  if (E > 0 && spec_.active > 0) softmax(r_.get(), 0, E, selected_.get(), spec_.active);
  if (E > 0 && spec_.active == 0) {  // no routed head is ever active
    softmax(r_.get(), 0, E, nullptr, 0);
    selected_.zero(N * E);
  }
  if (spec_.head_type_router()) softmax(a_.get(), type_column, 2, nullptr, 0);
  if (S > 1) softmax(s_.get(), shared_column, S, nullptr, 0);
  const moas_cuda_moh_gate_spec spec = gate_spec();
  device_check(t_,
               t_.moh_gates(&spec, r_.get(), selected_.get(), S > 1 ? s_.get() : nullptr,
                            spec_.head_type_router() ? a_.get() : nullptr, gate_.get(), H, N, nullptr),
               "moh_gates");
  routed_row_.reserve(t_, E * N);
  routed_pos_.reserve(t_, E * N);
  routed_begin_.reserve(t_, E * (ctx.batch + 1));
  for (int64_t i = 0; i < E; i++)
    device_check(t_,
                 t_.select_rows(routed_row(i, N), routed_pos(i, N), routed_begin(i, ctx.batch), selected_.get() + i, E,
                                ctx.batch, ctx.seq, ctx.past, nullptr),
                 "select_rows");
  if (training && E > 0) {
    std::vector<float> r;
    aux_ = balance_loss(&r, &f_);
  }
}

double CudaMoh::balance_loss(std::vector<float> *r, std::vector<double> *f) const {
  const int64_t N = tokens_, E = spec_.routed;
  std::vector<uint8_t> selected((size_t)(N * E));
  std::vector<double> mean_r;
  r->resize((size_t)(N * E));
  r_.download(r->data(), N * E);
  selected_.download(selected.data(), N * E);
  return moh_balance_loss(r->data(), selected.data(), N, E, &mean_r, f);
}

// MohAttention::router_stats, from the last forward's routing downloaded (a forward does not pay for them).
bool CudaMoh::router_stats(RouterStats *out) const {
  if (!mixture_ || spec_.routed == 0 || spec_.active == 0) return false;
  const int64_t N = tokens_, H = shape_.heads;
  const bool type = spec_.head_type_router();
  std::vector<float> r, gate((size_t)(N * H)), a(type ? (size_t)(2 * N) : 0);
  std::vector<double> f;
  const double aux = balance_loss(&r, &f);
  gate_.download(gate.data(), N * H);
  if (type) a_.download(a.data(), 2 * N);
  *out = moh_router_stats(spec_, H, N, r.data(), gate.data(), type ? a.data() : nullptr, f, aux);
  return true;
}

// MohAttention::gates: MixtureOfHeads' per-token gates downloaded; StaticPruning's are 1 on its heads, 0 elsewhere.
std::vector<float> CudaMoh::gates(int64_t *width) const {
  const int64_t N = tokens_, H = shape_.heads;
  *width = H;
  std::vector<float> gate((size_t)(N * H), 0.0f);
  if (mixture_) gate_.download(gate.data(), N * H);
  else
    for (int64_t n = 0; n < N; n++) std::fill_n(gate.data() + n * H, dense_heads_, 1.0f);
  return gate;
}

void CudaMoh::forward(const float *values, const float *x, float *y, const CudaContext &ctx, bool training) {
  const int64_t N = ctx.tokens(), C = shape_.width, H = shape_.heads, d = shape_.head_dim(), P = dense_heads_;
  const int64_t E = spec_.routed, F = dense_width(), QW = query_columns();
  const float *w = values + qkv_w_, *bias = qkv_b_ < 0 ? nullptr : values + qkv_b_;
  tokens_ = N;
  if (mixture_) route(values, x, ctx, training);

  // Projections: MixtureOfHeads every head's query (whole projections), StaticPruning its prefix's.
  dense_.reserve(t_, N * F);
  if (mixture_) {
    cuda_linear_forward(t_, dense_.get(), F, x, w, bias, N, C, F);
  } else {
    w_dense_.reserve(t_, F * C);
    b_dense_.reserve(t_, bias ? F : 0);
    for (const auto &[from, to, rows] : dense_row_blocks()) {
      device_check(t_, t_.copy(w_dense_.get() + to * C, w + from * C, (size_t)(rows * C) * sizeof(float), nullptr),
                   "copy");
      if (bias)
        device_check(t_, t_.copy(b_dense_.get() + to, bias + from, (size_t)rows * sizeof(float), nullptr), "copy");
    }
    cuda_linear_forward(t_, dense_.get(), F, x, w_dense_.get(), bias ? b_dense_.get() : nullptr, N, C, F);
  }
  // Queries and keys are adjacent column blocks. Routed heads' queries are rotated here, before their rows are
  // gathered: the CPU rotates the gathered copies, the same values at the same positions.
  if (ctx.rope_cos)
    device_check(t_,
                 t_.rope_rotate(dense_.get(), F, 0, QW / d + kv_computed_, N, ctx.pos, ctx.rope_cos, ctx.rope_sin,
                                ctx.rope_half, +1, nullptr),
                 "rope_rotate");
  routed_q_.reserve(t_, E * N * d);
  routed_out_.reserve(t_, E * N * d);
  gather_routed(routed_q_.get(), dense_.get(), F, ctx);

  // Attention: the always-active heads for every token, each routed head for its rows (listed even when it has
  // none this time: it then adds nothing). Routed heads' outputs land in their columns of att_, the rest 0.
  att_.reserve(t_, N * QW);
  lse_.reserve(t_, H * N);
  if (E > 0) att_.zero(N * QW);
  std::vector<moas_cuda_query_head> heads;
  for (int64_t h = 0; h < P; h++)
    heads.push_back({h, ctx.pos, ctx.begin, dense_.get() + h * d, F, att_.get() + h * d, QW, lse_.get() + h * N});
  for (int64_t i = 0; i < E; i++)
    heads.push_back({P + i, routed_pos(i, N), routed_begin(i, ctx.batch), routed_q_.get() + i * N * d, d,
                     routed_out_.get() + i * N * d, d, lse_.get() + (P + i) * N});
  n_heads_ = (int64_t)heads.size();
  heads_.upload(t_, heads.data(), n_heads_);
  moas_cuda_key_values kv = key_values(ctx);
  if (ctx.cache) {  // decoding: append this forward's keys and values, then attend over everything cached
    cache_write(*ctx.cache, 0, kv.k, kv.k_stride, kv.v, kv.v_stride, ctx.batch, ctx.seq, ctx.past);
    kv = cached_key_values(*ctx.cache, 0);
  }
  const moas_cuda_attention_dims dm = dims(ctx);
  const moas_cuda_dropout drop = attention_dropout(ctx);
  attend_.forward(t_, values, dm, kv, heads_.get(), n_heads_, drop);
  scatter_add_routed(att_.get(), QW, routed_out_.get(), ctx);

  // y = c_proj(concat_i gate_i head_i) in one product (StaticPruning: its prefix's columns of c_proj, gates 1).
  const float *gated = att_.get();
  if (mixture_) {
    gated_.reserve(t_, N * QW);
    device_check(t_, t_.moh_gate_heads(gated_.get(), gate_.get(), att_.get(), N, H, d, nullptr), "moh_gate_heads");
    gated = gated_.get();
  }
  if (proj_b_ >= 0) device_check(t_, t_.fill_rows(y, C, values + proj_b_, N, C, nullptr), "fill_rows");
  device_check(t_,
               t_.gemm(0, 1, N, C, QW, 1.0f, gated, QW, values + proj_w_, C, proj_b_ >= 0 ? 1.0f : 0.0f, y, C,
                       nullptr),
               "gemm (c_proj)");
  const moas_cuda_dropout out_drop = ctx.site((uint32_t)DropoutSiteId::AttentionOut);
  device_check(t_, t_.dropout_apply(y, N, C, nullptr, &out_drop, nullptr), "dropout");
}

void CudaMoh::backward(const float *values, float *grads, const float *x, float *dy, float *dx, const CudaContext &ctx,
                       double aux_grad_scale) {
  const int64_t N = ctx.tokens(), C = shape_.width, H = shape_.heads, d = shape_.head_dim(), P = dense_heads_;
  const int64_t E = spec_.routed, F = dense_width(), QW = query_columns(), KV = kv_computed_ * d;
  const float *w = values + qkv_w_, *w_proj = values + proj_w_;
  float *dbias = qkv_b_ < 0 ? nullptr : grads + qkv_b_;

  const moas_cuda_dropout out_drop = ctx.site((uint32_t)DropoutSiteId::AttentionOut);
  device_check(t_, t_.dropout_apply(dy, N, C, nullptr, &out_drop, nullptr), "dropout");
  if (proj_b_ >= 0)
    device_check(t_, t_.column_sum_accumulate(grads + proj_b_, dy, C, N, C, nullptr), "column_sum_accumulate");

  // Through c_proj and the gates: d gated = dy W_h, d att = gate * d gated, d gate = <d gated, att>.
  device_check(t_,
               t_.gemm(1, 0, C, QW, N, 1.0f, dy, C, mixture_ ? gated_.get() : att_.get(), QW, 1.0f, grads + proj_w_,
                       C, nullptr),
               "gemm (c_proj weight gradient)");
  d_att_.reserve(t_, N * QW);
  d_gated_.reserve(t_, mixture_ ? N * QW : 0);
  d_gate_.reserve(t_, mixture_ ? N * H : 0);
  device_check(t_,
               t_.gemm(0, 0, N, QW, C, 1.0f, dy, C, w_proj, C, 0.0f, mixture_ ? d_gated_.get() : d_att_.get(), QW,
                       nullptr),
               "gemm (c_proj input gradient)");
  if (mixture_)
    device_check(t_,
                 t_.moh_gate_heads_backward(d_att_.get(), d_gate_.get(), d_gated_.get(), gate_.get(), att_.get(), N, H,
                                            d, nullptr),
                 "moh_gate_heads_backward");
  routed_dout_.reserve(t_, E * N * d);
  routed_dq_.reserve(t_, E * N * d);
  gather_routed(routed_dout_.get(), d_att_.get(), QW, ctx);

  // Attention. Inactive pairs' query rows of d_dense_ stay 0; the routed heads' dq land in their columns after.
  d_dense_.reserve(t_, N * F);
  d_dense_.zero(N * F);
  std::vector<moas_cuda_query_head_grad> head_grads;
  for (int64_t h = 0; h < P; h++) head_grads.push_back({d_att_.get() + h * d, QW, d_dense_.get() + h * d, F});
  for (int64_t i = 0; i < E; i++)
    head_grads.push_back({routed_dout_.get() + i * N * d, d, routed_dq_.get() + i * N * d, d});
  head_grads_.upload(t_, head_grads.data(), n_heads_);
  const moas_cuda_key_value_grads dkv{d_dense_.get() + QW, F, d_dense_.get() + QW + KV, F};
  const moas_cuda_attention_dims dm = dims(ctx);
  const moas_cuda_key_values kv = key_values(ctx);
  const moas_cuda_dropout drop = attention_dropout(ctx);
  attend_.backward(t_, values, grads, dm, kv, heads_.get(), head_grads_.get(), n_heads_, dkv, drop);
  scatter_add_routed(d_dense_.get(), F, routed_dq_.get(), ctx);
  if (ctx.rope_cos)
    device_check(t_,
                 t_.rope_rotate(d_dense_.get(), F, 0, QW / d + kv_computed_, N, ctx.pos, ctx.rope_cos, ctx.rope_sin,
                                ctx.rope_half, -1, nullptr),
                 "rope_rotate");

  if (mixture_) {
    cuda_linear_backward(t_, dx, true, grads + qkv_w_, dbias, d_dense_.get(), x, w, N, C, F);
    router_backward(values, grads, x, dx, ctx, aux_grad_scale);
    return;
  }
  // StaticPruning: through the gathered weight, its gradient added back onto the rows it came from.
  dw_dense_.reserve(t_, F * C);
  dw_dense_.zero(F * C);
  db_dense_.reserve(t_, dbias ? F : 0);
  if (dbias) db_dense_.zero(F);
  cuda_linear_backward(t_, dx, true, dw_dense_.get(), dbias ? db_dense_.get() : nullptr, d_dense_.get(), x,
                       w_dense_.get(), N, C, F);
  float *dw = grads + qkv_w_;
  for (const auto &[from, to, rows] : dense_row_blocks()) {
    device_check(t_, t_.add(dw + from * C, dw + from * C, dw_dense_.get() + to * C, rows * C, nullptr), "add");
    if (dbias) device_check(t_, t_.add(dbias + from, dbias + from, db_dense_.get() + to, rows, nullptr), "add");
  }
}

// Gates -> router softmaxes (plus the load-balance gradient E f_i / N on the routed softmax) -> router weights.
void CudaMoh::router_backward(const float *values, float *grads, const float *x, float *dx, const CudaContext &ctx,
                              double aux_grad_scale) {
  const int64_t N = ctx.tokens(), C = shape_.width, H = shape_.heads, E = spec_.routed, S = spec_.shared;
  const int64_t R = router_rows_, type_column = E, shared_column = E + (spec_.head_type_router() ? 2 : 0);
  const bool type = spec_.head_type_router();
  d_r_.reserve(t_, N * E);
  d_s_.reserve(t_, N * S);
  d_a_.reserve(t_, 2 * N);
  const moas_cuda_moh_gate_spec spec = gate_spec();
  device_check(t_,
               t_.moh_gates_backward(&spec, r_.get(), selected_.get(), S > 1 ? s_.get() : nullptr,
                                     type ? a_.get() : nullptr, d_gate_.get(), H, d_r_.get(),
                                     S > 1 ? d_s_.get() : nullptr, type ? d_a_.get() : nullptr, N, nullptr),
               "moh_gates_backward");
  if (E > 0) {  // the same constant row added to every token's d r, as its float
    std::vector<float> balance;
    moh_balance_gradient_row(N, E, f_, aux_grad_scale, balance);
    balance_grad_.upload(t_, balance.data(), E);
    balance_rows_.reserve(t_, N * E);
    device_check(t_, t_.fill_rows(balance_rows_.get(), E, balance_grad_.get(), N, E, nullptr), "fill_rows");
    device_check(t_, t_.add(d_r_.get(), d_r_.get(), balance_rows_.get(), N * E, nullptr), "add");
  }
  if (R == 0) return;
  d_logits_.reserve(t_, N * R);
  auto softmax_backward = [&](int64_t column, const float *dp, const float *p, int64_t width) {
    device_check(t_, t_.router_softmax_backward(d_logits_.get() + column, R, dp, p, N, width, nullptr),
                 "router_softmax_backward");
  };
  if (E > 0) softmax_backward(0, d_r_.get(), r_.get(), E);
  if (type) softmax_backward(type_column, d_a_.get(), a_.get(), 2);
  if (S > 1) softmax_backward(shared_column, d_s_.get(), s_.get(), S);
  cuda_linear_backward(t_, dx, true, grads + routers_, nullptr, d_logits_.get(), x, values + routers_, N, C, R);
}

void CudaMoh::gather_routed(float *compact, const float *full, int64_t stride, const CudaContext &ctx) const {
  const int64_t N = ctx.tokens(), d = shape_.head_dim(), P = dense_heads_;
  for (int64_t i = 0; i < spec_.routed; i++)
    device_check(t_,
                 t_.gather_rows(compact + i * N * d, d, full + (P + i) * d, stride, routed_row(i, N),
                                routed_count(i, ctx.batch), N, d, nullptr),
                 "gather_rows");
}

void CudaMoh::scatter_add_routed(float *full, int64_t stride, const float *compact, const CudaContext &ctx) const {
  const int64_t N = ctx.tokens(), d = shape_.head_dim(), P = dense_heads_;
  for (int64_t i = 0; i < spec_.routed; i++)
    device_check(t_,
                 t_.scatter_add_rows(full + (P + i) * d, stride, compact + i * N * d, d, routed_row(i, N), nullptr,
                                     routed_count(i, ctx.batch), N, d, nullptr),
                 "scatter_add_rows");
}

}  // namespace moas
