#include "model/model.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "ops/dropout.hpp"
#include "ops/embedding.hpp"
#include "ops/init.hpp"
#include "ops/linear.hpp"
#include "ops/loss.hpp"
#include "ops/mlp.hpp"
#include "ops/norm.hpp"

namespace moas {

template <typename T>
Model<T>::Model(const ModelConfig &config) : config_(config) {
  register_parameters();
  params.allocate();
  initialise_parameters(params, config_.n_layer, config_.seed);
  if (config_.position == PositionKind::Rope)
    rope_.configure(config_.block_size, config_.head_dim(), config_.rope_base);
}

template <typename T>
std::vector<ParamInfo> Model<T>::parameter_infos(const ModelConfig &config) {
  return Model<T>(config, ShapesOnly{}).params.infos();
}

template <typename T>
int64_t Model<T>::fc_width() const {
  return config_.mlp == MlpKind::SwiGlu ? 2 * config_.mlp_hidden : config_.mlp_hidden;
}

// Names and shapes are those of the reference PyTorch (nanoGPT) model. Tensors that one GEMM consumes together
// ([q; k; v], [c_fc; c_up]) are registered back to back so they are one contiguous weight.
template <typename T>
void Model<T>::register_parameters() {
  const ModelConfig &c = config_;
  const int64_t C = c.n_embd, hidden = c.mlp_hidden;
  const bool swiglu = c.mlp == MlpKind::SwiGlu;
  auto bias = [&](const std::string &name, int64_t n) { return c.bias ? params.add(name, {n}) : (int64_t)-1; };
  auto norm_bias = [&](const std::string &name) {
    return c.bias && c.norm == NormKind::LayerNorm ? params.add(name, {C}) : (int64_t)-1;
  };

  wte_ = params.add("transformer.wte.weight", {c.vocab_size, C});
  if (c.position == PositionKind::Learned) wpe_ = params.add("transformer.wpe.weight", {c.block_size, C});
  for (int64_t l = 0; l < c.n_layer; l++) {
    const std::string p = "transformer.h." + std::to_string(l) + ".";
    LayerParams lp;
    lp.ln1_w = params.add(p + "ln_1.weight", {C});
    lp.ln1_b = norm_bias(p + "ln_1.bias");
    attn_.push_back(make_attention_block<T>(c, params, p + "attn."));
    lp.ln2_w = params.add(p + "ln_2.weight", {C});
    lp.ln2_b = norm_bias(p + "ln_2.bias");
    lp.fc_w = params.add(p + "mlp.c_fc.weight", {hidden, C});
    if (swiglu) params.add(p + "mlp.c_up.weight", {hidden, C});
    lp.fc_b = bias(p + "mlp.c_fc.bias", hidden);
    if (swiglu) bias(p + "mlp.c_up.bias", hidden);
    lp.mproj_w = params.add(p + "mlp.c_proj.weight", {C, hidden});
    lp.mproj_b = bias(p + "mlp.c_proj.bias", C);
    layers_.push_back(lp);
  }
  lnf_w_ = params.add("transformer.ln_f.weight", {C});
  lnf_b_ = norm_bias("transformer.ln_f.bias");
}

template <typename T>
void Model<T>::resize_buffers(int64_t N, bool training) {
  const ModelConfig &c = config_;
  const int64_t C = c.n_embd;
  const size_t n_layers_kept = training ? (size_t)c.n_layer : 1;
  if (acts_.size() < n_layers_kept) acts_.resize(n_layers_kept);
  for (size_t l = 0; l < n_layers_kept; l++) {
    LayerActivations &a = acts_[l];
    a.ln1.resize((size_t)(N * C));
    a.ln1_mean.resize((size_t)N);
    a.ln1_rstd.resize((size_t)N);
    a.mid.resize((size_t)(N * C));
    a.ln2.resize((size_t)(N * C));
    a.ln2_mean.resize((size_t)N);
    a.ln2_rstd.resize((size_t)N);
    a.fc_pre.resize((size_t)(N * fc_width()));
    a.fc_act.resize((size_t)(N * c.mlp_hidden));
  }
  residual_.resize((size_t)c.n_layer + 1);
  for (auto &r : residual_) r.resize((size_t)(N * C));
  lnf_.resize((size_t)(N * C));
  lnf_mean_.resize((size_t)N);
  lnf_rstd_.resize((size_t)N);
  logits_.resize((size_t)(N * c.vocab_size));
  ce_lse_.resize((size_t)N);
  scratch_c_.resize((size_t)(N * C));
}

template <typename T>
std::vector<std::vector<int64_t>> Model<T>::cache_widths() const {
  std::vector<std::vector<int64_t>> widths;
  for (const auto &block : attn_) widths.push_back(block->cache_widths());
  return widths;
}

template <typename T>
void Model<T>::allocate_cache(KvCache<T> *cache, int64_t batch, int64_t capacity) const {
  cache->allocate(batch, capacity, config_.window, cache_widths());
}

template <typename T>
BlockContext<T> Model<T>::block_context(uint32_t layer, float dropout, KvCache<T> *cache) const {
  BlockContext<T> ctx;
  if (cache) ctx.cache = &cache->layers[layer];
  ctx.decode = decode_;
  ctx.past = past_;
  ctx.batch = B_;
  ctx.seq = Tn_;
  ctx.all_rows = &all_rows_;
  ctx.rope = config_.position == PositionKind::Rope ? &rope_ : nullptr;
  ctx.dropout = dropout;
  ctx.attn_dropout = config_.attn_dropout;
  ctx.seed = config_.seed;
  ctx.step = dropout_step_;
  ctx.layer = layer;
  return ctx;
}

// Layers whose attention adds a load-balance loss; the model's aux is their mean.
template <typename T>
int64_t Model<T>::aux_layers() const {
  const bool routed = (config_.attention == AttentionKind::Moas && config_.moas.mode != MoasMode::Static) ||
                      (config_.attention == AttentionKind::Moh &&
                       config_.heads.strategy == HeadStrategy::MixtureOfHeads);
  return routed ? config_.n_layer : 0;
}

template <typename T>
double Model<T>::forward(const int32_t *tokens, const int32_t *targets, int64_t B, int64_t Tn, bool training,
                         KvCache<T> *cache) {
  const ModelConfig &c = config_;
  const int64_t N = B * Tn, C = c.n_embd;
  const bool rms = c.norm == NormKind::RMSNorm;
  const float p = training ? c.dropout : 0.0f;
  backward_ready_ = false;
  resize_buffers(N, training);
  B_ = B;
  Tn_ = Tn;
  past_ = cache ? cache->length : 0;
  decode_ = cache && N <= kSkinnyRows ? &decode_weights_ : nullptr;
  if (cache) cache->make_room(Tn);
  all_rows_.set_all(B, Tn, past_);
  rope_.cover(past_ + Tn);
  tokens_.assign(tokens, tokens + N);
  if (targets) targets_.assign(targets, targets + N);
  else targets_.clear();
  dropout_step_ = training_forwards;
  auto site = [&](uint32_t layer, DropoutSiteId id) { return Dropout::at(p, c.seed, dropout_step_, layer, id); };
  const uint32_t L = (uint32_t)c.n_layer;

  embedding_forward(residual_[0].data(), tokens, w(wte_), w(wpe_), B, Tn, C, past_);
  dropout_apply(residual_[0].data(), N * C, site(L, DropoutSiteId::Embedding));

  double aux_sum = 0;
  for (uint32_t l = 0; l < L; l++) {
    const LayerParams &lp = layers_[l];
    LayerActivations &a = acts_[training ? l : 0];
    const T *x = residual_[l].data();
    T *x_next = residual_[l + 1].data();

    // Attention sub-block: mid = x + Attn(norm1(x)) (the block applies its own output dropout).
    norm_forward(rms, a.ln1.data(), a.ln1_mean.data(), a.ln1_rstd.data(), x, w(lp.ln1_w), w(lp.ln1_b), N, C);
    attn_[l]->forward(params, a.ln1.data(), scratch_c_.data(), block_context(l, p, cache), training);
    aux_sum += attn_[l]->aux_loss();
    T *mid = a.mid.data();
    parallel_for(N * C, N * C >= kParallelGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; i++) mid[i] = x[i] + scratch_c_[(size_t)i];
    });

    // MLP sub-block: x_next = mid + dropout(c_proj(act(c_fc(norm2(mid)))))
    norm_forward(rms, a.ln2.data(), a.ln2_mean.data(), a.ln2_rstd.data(), mid, w(lp.ln2_w), w(lp.ln2_b), N, C);
    linear_forward(a.fc_pre.data(), fc_width(), a.ln2.data(), w(lp.fc_w), w(lp.fc_b), N, C, fc_width(), decode_);
    if (c.mlp == MlpKind::SwiGlu) swiglu_forward(a.fc_act.data(), a.fc_pre.data(), N, c.mlp_hidden);
    else gelu_forward(a.fc_act.data(), a.fc_pre.data(), N * c.mlp_hidden);
    linear_forward(scratch_c_.data(), C, a.fc_act.data(), w(lp.mproj_w), w(lp.mproj_b), N, c.mlp_hidden, C, decode_);
    dropout_apply(scratch_c_.data(), N * C, site(l, DropoutSiteId::MlpOut));
    parallel_for(N * C, N * C >= kParallelGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; i++) x_next[i] = mid[i] + scratch_c_[(size_t)i];
    });
  }
  aux_ = training && aux_layers() > 0 ? aux_sum / (double)aux_layers() : 0.0;

  norm_forward(rms, lnf_.data(), lnf_mean_.data(), lnf_rstd_.data(), residual_[L].data(), w(lnf_w_), w(lnf_b_), N, C);
  linear_forward(logits_.data(), c.vocab_size, lnf_.data(), w(wte_), (const T *)nullptr, N, C, c.vocab_size,
                 decode_);
  const double loss = cross_entropy_forward(ce_lse_.data(), logits_.data(), targets, N, c.vocab_size, &n_counted_);
  if (training) {
    training_forwards++;
    backward_ready_ = targets != nullptr;
  }
  if (cache) cache->length += Tn;
  return loss;
}

// Walks the forward in exact reverse. Parameter gradients and the residual-stream gradient d_res_ accumulate (+=);
// every other gradient buffer is overwritten.
template <typename T>
void Model<T>::backward() {
  backward_ready_ = false;  // a second backward of one forward would add its gradients twice
  const ModelConfig &c = config_;
  const int64_t N = B_ * Tn_, C = c.n_embd, V = c.vocab_size, hidden = c.mlp_hidden, F = fc_width();
  const bool rms = c.norm == NormKind::RMSNorm;
  const uint32_t L = (uint32_t)c.n_layer;
  auto site = [&](uint32_t layer, DropoutSiteId id) { return Dropout::at(c.dropout, c.seed, dropout_step_, layer, id); };
  for (auto *buf : {&d_res_, &d_c_, &d_ln_, &norm_scratch_}) buf->resize((size_t)(N * C));
  d_hidden_.resize((size_t)(N * hidden));
  d_pre_.resize((size_t)(N * F));
  d_logits_.resize((size_t)(N * V));

  if (n_counted_ > 0) {
    cross_entropy_backward(d_logits_.data(), logits_.data(), ce_lse_.data(), targets_.data(), N, V,
                           (T)(1.0 / (double)n_counted_));
  } else {
    std::fill(d_logits_.begin(), d_logits_.end(), T(0));
  }
  linear_backward(d_ln_.data(), false, g(wte_), (T *)nullptr, d_logits_.data(), lnf_.data(), w(wte_), N, C, V);
  std::fill(d_res_.begin(), d_res_.end(), T(0));
  norm_backward(rms, d_res_.data(), g(lnf_w_), g(lnf_b_), norm_scratch_.data(), d_ln_.data(), residual_[L].data(),
                w(lnf_w_), lnf_mean_.data(), lnf_rstd_.data(), N, C);

  const double aux_scale = aux_layers() > 0 ? c.aux_weight() / (double)aux_layers() : 0.0;
  for (int64_t l = (int64_t)L - 1; l >= 0; l--) {
    const LayerParams &lp = layers_[(size_t)l];
    LayerActivations &a = acts_[(size_t)l];

    // MLP sub-block.
    std::copy(d_res_.begin(), d_res_.end(), d_c_.begin());
    dropout_apply(d_c_.data(), N * C, site((uint32_t)l, DropoutSiteId::MlpOut));
    linear_backward(d_hidden_.data(), false, g(lp.mproj_w), g(lp.mproj_b), d_c_.data(), a.fc_act.data(),
                    w(lp.mproj_w), N, hidden, C);
    if (c.mlp == MlpKind::SwiGlu) swiglu_backward(d_pre_.data(), d_hidden_.data(), a.fc_pre.data(), N, hidden);
    else gelu_backward(d_pre_.data(), d_hidden_.data(), a.fc_pre.data(), N * hidden);
    linear_backward(d_ln_.data(), false, g(lp.fc_w), g(lp.fc_b), d_pre_.data(), a.ln2.data(), w(lp.fc_w), N, C, F);
    norm_backward(rms, d_res_.data(), g(lp.ln2_w), g(lp.ln2_b), norm_scratch_.data(), d_ln_.data(), a.mid.data(),
                  w(lp.ln2_w), a.ln2_mean.data(), a.ln2_rstd.data(), N, C);

    // Attention sub-block.
    std::copy(d_res_.begin(), d_res_.end(), d_c_.begin());
    std::fill(d_ln_.begin(), d_ln_.end(), T(0));
    attn_[(size_t)l]->backward(params, a.ln1.data(), d_c_.data(), d_ln_.data(),
                               block_context((uint32_t)l, c.dropout, nullptr), aux_scale);
    norm_backward(rms, d_res_.data(), g(lp.ln1_w), g(lp.ln1_b), norm_scratch_.data(), d_ln_.data(),
                  residual_[(size_t)l].data(), w(lp.ln1_w), a.ln1_mean.data(), a.ln1_rstd.data(), N, C);
  }

  dropout_apply(d_res_.data(), N * C, site(L, DropoutSiteId::Embedding));
  embedding_backward(g(wte_), g(wpe_), d_res_.data(), tokens_.data(), B_, Tn_, C);
}

template class Model<float>;
template class Model<double>;

}  // namespace moas
