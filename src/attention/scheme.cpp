#include "attention/scheme.hpp"

#include "ops/linear.hpp"

namespace moas {

template <typename T>
SchemeWeights register_scheme_weights(ParamTable<T> &params, const std::string &prefix, const SchemeShape &shape) {
  const int64_t C = shape.width, kv = shape.kv_width();
  SchemeWeights w;
  if (shape.kv_heads == shape.heads) {
    w.qkv = params.add(prefix + "c_attn.weight", {3 * C, C});
    if (shape.bias) w.qkv_bias = params.add(prefix + "c_attn.bias", {3 * C});
  } else {
    w.qkv = params.add(prefix + "q_proj.weight", {C, C});
    params.add(prefix + "k_proj.weight", {kv, C});
    params.add(prefix + "v_proj.weight", {kv, C});
    if (shape.bias) {
      w.qkv_bias = params.add(prefix + "q_proj.bias", {C});
      params.add(prefix + "k_proj.bias", {kv});
      params.add(prefix + "v_proj.bias", {kv});
    }
  }
  w.proj = params.add(prefix + "c_proj.weight", {C, C});
  if (shape.bias) w.proj_bias = params.add(prefix + "c_proj.bias", {C});
  return w;
}

template <typename T>
Scheme<T>::Scheme(ParamTable<T> &params, const std::string &prefix, const SchemeShape &shape, uint32_t dropout_branch)
    : shape_(shape), branch_(dropout_branch), w_(register_scheme_weights(params, prefix, shape)) {}

// Dense: q_ is the fused [N, W] projection, so q, k and v are column blocks of it. Routed: q_ holds the query
// tokens' [m, H d] and kv_ every token's [N, 2 Hkv d].
template <typename T>
const std::vector<QueryHead<T>> &Scheme<T>::query_heads() {
  const int64_t d = shape_.head_dim(), m = rows_->size();
  const int64_t q_stride = rows_->all ? shape_.qkv_width() : shape_.q_width();
  heads_.clear();
  for (int64_t h = 0; h < shape_.heads; ++h)
    heads_.push_back({h, rows_, q_.data() + h * d, q_stride, att_.data() + h * d, shape_.width, lse_.data() + h * m});
  return heads_;
}

template <typename T>
KeyValues<T> Scheme<T>::key_values() const {
  const T *k = rows_->all ? q_.data() + shape_.q_width() : kv_.data();
  const int64_t stride = rows_->all ? shape_.qkv_width() : 2 * shape_.kv_width();
  return {k, stride, k + shape_.kv_width(), stride, 0};
}

template <typename T>
void Scheme<T>::forward(const ParamTable<T> &params, const T *x, const RowSet &rows, T *z, const BlockContext<T> &ctx,
                        const AttentionOptions &options) {
  const int64_t N = ctx.tokens(), m = rows.size(), C = shape_.width, Q = shape_.q_width(), W = shape_.qkv_width();
  const int64_t KV = 2 * shape_.kv_width(), H = shape_.heads, Hkv = shape_.kv_heads;
  const T *w = params.value(w_.qkv), *bias = params.value_or_null(w_.qkv_bias);
  rows_ = &rows;
  if (rows.all) {
    q_.resize((size_t)(N * W));
    if (ctx.decode) {  // the query and key/value blocks apart, as below: a routed branch packs the same two blocks
      linear_forward(q_.data(), W, x, w, bias, N, C, Q, ctx.decode);  // whichever of its paths a token takes
      linear_forward(q_.data() + Q, W, x, w + Q * C, bias ? bias + Q : nullptr, N, C, KV, ctx.decode);
    } else {
      linear_forward(q_.data(), W, x, w, bias, N, C, W);
    }
    if (ctx.rope) rope_rotate(q_.data(), W, 0, H + Hkv, N, rows.pos.data(), *ctx.rope, +1);
  } else {
    q_.resize((size_t)(m * Q));
    kv_.resize((size_t)(N * KV));
    x_rows_.resize((size_t)(m * C));
    gather_rows(x_rows_.data(), C, x, C, rows.row, C);
    linear_forward(q_.data(), Q, x_rows_.data(), w, bias, m, C, Q, ctx.decode);
    linear_forward(kv_.data(), KV, x, w + Q * C, bias ? bias + Q : nullptr, N, C, KV, ctx.decode);
    if (ctx.rope) {
      rope_rotate(q_.data(), Q, 0, H, m, rows.pos.data(), *ctx.rope, +1);
      rope_rotate(kv_.data(), KV, 0, Hkv, N, ctx.all_rows->pos.data(), *ctx.rope, +1);
    }
  }
  att_.resize((size_t)(m * C));
  lse_.resize((size_t)(H * m));
  KeyValues<T> kv = key_values();
  kv.seq_stride = ctx.seq;
  if (ctx.cache) {  // decoding: append this forward's keys and values, then attend over everything cached
    cache_write(*ctx.cache, branch_, kv.k, kv.k_stride, kv.v, kv.v_stride, ctx.batch, ctx.seq, ctx.past);
    kv = cached_key_values(*ctx.cache, branch_);
  }
  const AttentionDims dims{ctx.batch, ctx.key_length(), H, Hkv, shape_.head_dim()};
  attend_forward(params, options, dims, kv, query_heads(),
                 ctx.attn_dropout ? ctx.site(branch_site(DropoutSiteId::AttentionProbs, branch_)) : Dropout{});
  linear_forward(z, C, att_.data(), params.value(w_.proj), params.value_or_null(w_.proj_bias), m, C, C, ctx.decode);
  dropout_apply_rows(z, m, C, rows.row.data(), ctx.site(branch_site(DropoutSiteId::AttentionOut, branch_)));
}

template <typename T>
void Scheme<T>::backward(ParamTable<T> &params, const T *x, T *dz, T *dx, const BlockContext<T> &ctx,
                         const AttentionOptions &options) {
  const RowSet &rows = *rows_;
  const int64_t N = ctx.tokens(), m = rows.size(), C = shape_.width, Q = shape_.q_width(), W = shape_.qkv_width();
  const int64_t KV = 2 * shape_.kv_width(), H = shape_.heads, Hkv = shape_.kv_heads, d = shape_.head_dim();
  const T *w = params.value(w_.qkv);
  T *dw = params.grad(w_.qkv), *dbias = params.grad_or_null(w_.qkv_bias);

  dropout_apply_rows(dz, m, C, rows.row.data(), ctx.site(branch_site(DropoutSiteId::AttentionOut, branch_)));
  d_att_.resize((size_t)(m * C));
  linear_backward(d_att_.data(), false, params.grad(w_.proj), params.grad_or_null(w_.proj_bias), dz,
                  att_.data(), params.value(w_.proj), m, C, C);

  KeyValues<T> kv = key_values();
  kv.seq_stride = ctx.seq;
  T *dq, *dk;
  int64_t dq_stride, dk_stride;
  if (rows.all) {
    d_q_.resize((size_t)(N * W));
    dq = d_q_.data(), dk = d_q_.data() + Q, dq_stride = dk_stride = W;
  } else {
    d_q_.resize((size_t)(m * Q));
    d_kv_.resize((size_t)(N * KV));
    dq = d_q_.data(), dk = d_kv_.data(), dq_stride = Q, dk_stride = KV;
  }
  head_grads_.clear();
  for (int64_t h = 0; h < H; ++h) head_grads_.push_back({d_att_.data() + h * d, C, dq + h * d, dq_stride});
  const AttentionDims dims{ctx.batch, ctx.seq, H, Hkv, d};
  attend_backward(params, options, dims, kv, query_heads(), head_grads_,
                  KeyValueGrads<T>{dk, dk_stride, dk + Hkv * d, dk_stride},
                  ctx.attn_dropout ? ctx.site(branch_site(DropoutSiteId::AttentionProbs, branch_)) : Dropout{});

  if (rows.all) {
    if (ctx.rope) rope_rotate(dq, W, 0, H + Hkv, N, rows.pos.data(), *ctx.rope, -1);
    linear_backward(dx, true, dw, dbias, dq, x, w, N, C, W);
    return;
  }
  if (ctx.rope) {
    rope_rotate(dq, Q, 0, H, m, rows.pos.data(), *ctx.rope, -1);
    rope_rotate(dk, KV, 0, Hkv, N, ctx.all_rows->pos.data(), *ctx.rope, -1);
  }
  d_x_rows_.resize((size_t)(m * C));
  linear_backward(d_x_rows_.data(), false, dw, dbias, dq, x_rows_.data(), w, m, C, Q);
  scatter_add_rows(dx, C, d_x_rows_.data(), C, rows.row, C, (const T *)nullptr);
  linear_backward(dx, true, dw + Q * C, dbias ? dbias + Q : nullptr, dk, x, w + Q * C, N, C, KV);
}

template SchemeWeights register_scheme_weights(ParamTable<float> &, const std::string &, const SchemeShape &);
template SchemeWeights register_scheme_weights(ParamTable<double> &, const std::string &, const SchemeShape &);
template class Scheme<float>;
template class Scheme<double>;

}  // namespace moas
