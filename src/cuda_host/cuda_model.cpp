#include "cuda_host/cuda_model.hpp"

#include <algorithm>
#include <cmath>

#include "cuda_host/cuda_linear.hpp"
#include "cuda_host/cuda_loader.hpp"
#include "cuda_host/cuda_positions.hpp"
#include "ops/dropout.hpp"

namespace moas {

CudaModel::CudaModel(const moas_cuda_backend &table, int32_t device_index, Model<float> &mirror)
    : t_(table),
      device_index_(device_index),
      mirror_(mirror),
      config_(mirror.config()),
      // The device is chosen before the first allocation.
      params_((bind_device(table, device_index, config_.matmul_precision), table), mirror.params,
              mirror.optimizer),
      positions_(table, config_) {
  find_parameters();
}

// The tensors by their reference names (model.cpp registers them); [c_fc; c_up] is contiguous, so one weight from
// c_fc's offset. Each layer's attention block finds its own.
void CudaModel::find_parameters() {
  const ParamTable<float> &params = mirror_.params;
  auto at = [&](const std::string &name) { return params.offset_if_present(name); };
  wte_ = at("transformer.wte.weight");
  wpe_ = at("transformer.wpe.weight");
  for (int64_t l = 0; l < config_.n_layer; l++) {
    const std::string p = "transformer.h." + std::to_string(l) + ".";
    layers_.push_back({at(p + "ln_1.weight"), at(p + "ln_1.bias"), at(p + "ln_2.weight"), at(p + "ln_2.bias"),
                       at(p + "mlp.c_fc.weight"), at(p + "mlp.c_fc.bias"), at(p + "mlp.c_proj.weight"),
                       at(p + "mlp.c_proj.bias")});
    attn_.push_back(make_cuda_attention(t_, config_, params, p + "attn."));
  }
  lnf_w_ = at("transformer.ln_f.weight");
  lnf_b_ = at("transformer.ln_f.bias");
}

void CudaModel::reserve_buffers(int64_t N, bool training) {
  const ModelConfig &c = config_;
  const int64_t C = c.n_embd;
  const int64_t F = c.mlp == MlpKind::SwiGlu ? 2 * c.mlp_hidden : c.mlp_hidden;
  const size_t kept = training ? (size_t)c.n_layer : 1;
  if (acts_.size() < kept) acts_.resize(kept);
  for (size_t l = 0; l < kept; l++) {
    LayerActivations &a = acts_[l];
    for (DeviceArray<float> *buf : {&a.ln1, &a.mid, &a.ln2}) buf->reserve(t_, N * C);
    for (DeviceArray<float> *buf : {&a.ln1_mean, &a.ln1_rstd, &a.ln2_mean, &a.ln2_rstd}) buf->reserve(t_, N);
    a.fc_pre.reserve(t_, N * F);
    a.fc_act.reserve(t_, N * c.mlp_hidden);
  }
  residual_.resize((size_t)c.n_layer + 1);
  for (DeviceArray<float> &r : residual_) r.reserve(t_, N * C);
  lnf_.reserve(t_, N * C);
  scratch_c_.reserve(t_, N * C);
  lnf_mean_.reserve(t_, N);
  lnf_rstd_.reserve(t_, N);
  ce_lse_.reserve(t_, N);
  logits_.reserve(t_, N * c.vocab_size);
  loss_.reserve(t_, 1);
  n_counted_.reserve(t_, 1);
}

CudaContext CudaModel::context(uint32_t layer, float p, CudaKvCache *cache) const {
  CudaContext ctx = positions_.context(config_, p, dropout_step_, layer);
  if (cache) ctx.cache = &cache->layers[layer];
  return ctx;
}

// Layers whose attention adds a load-balance loss; the model's aux is their mean (as Model::aux_layers).
int64_t CudaModel::aux_layers() const {
  const bool routed = (config_.attention == AttentionKind::Moas && config_.moas.mode != MoasMode::Static) ||
                      (config_.attention == AttentionKind::Moh &&
                       config_.heads.strategy == HeadStrategy::MixtureOfHeads);
  return routed ? config_.n_layer : 0;
}

void CudaModel::allocate_cache(CudaKvCache *cache, int64_t batch, int64_t capacity) const {
  cache->allocate(batch, capacity, config_.window, mirror_.cache_widths(), t_);
}

double CudaModel::forward(const int32_t *tokens, const int32_t *targets, int64_t B, int64_t Tn, bool training,
                          CudaKvCache *cache) {
  const ModelConfig &c = config_;
  const int64_t N = B * Tn, C = c.n_embd, V = c.vocab_size, hidden = c.mlp_hidden;
  const int64_t F = c.mlp == MlpKind::SwiGlu ? 2 * hidden : hidden;
  const int32_t rms = c.norm == NormKind::RMSNorm;
  const float p = training ? c.dropout : 0.0f;
  const uint32_t L = (uint32_t)c.n_layer;
  backward_ready_ = false;
  reserve_buffers(N, training);
  const int64_t past = cache ? cache->length : 0;
  if (cache) cache->make_room(Tn);
  dropout_step_ = mirror_.training_forwards;
  tokens_.upload(t_, tokens, N);
  has_targets_ = targets != nullptr;
  if (targets) targets_.upload(t_, targets, N);
  positions_.set(B, Tn, past);

  device_check(t_, t_.embedding_forward(residual_[0].get(), tokens_.get(), w(wte_), w(wpe_), B, Tn, C, past, nullptr),
               "embedding_forward");
  const moas_cuda_dropout embedding_drop = context(L, p).site((uint32_t)DropoutSiteId::Embedding);
  device_check(t_, t_.dropout_apply(residual_[0].get(), N, C, nullptr, &embedding_drop, nullptr), "dropout");

  double aux_sum = 0;
  for (uint32_t l = 0; l < L; l++) {
    const LayerParams &lp = layers_[l];
    LayerActivations &a = acts_[training ? l : 0];
    const float *x = residual_[l].get();
    float *x_next = residual_[l + 1].get();

    // Attention sub-block: mid = x + Attn(norm1(x)).
    device_check(t_,
                 t_.norm_forward(rms, a.ln1.get(), a.ln1_mean.get(), a.ln1_rstd.get(), x, w(lp.ln1_w), w(lp.ln1_b), N,
                                 C, nullptr),
                 "norm_forward");
    attn_[l]->forward(params_.values(), a.ln1.get(), scratch_c_.get(), context(l, p, cache), training);
    aux_sum += attn_[l]->aux_loss();
    device_check(t_, t_.add(a.mid.get(), x, scratch_c_.get(), N * C, nullptr), "add");

    // MLP sub-block: x_next = mid + dropout(c_proj(act(c_fc(norm2(mid))))).
    device_check(t_,
                 t_.norm_forward(rms, a.ln2.get(), a.ln2_mean.get(), a.ln2_rstd.get(), a.mid.get(), w(lp.ln2_w),
                                 w(lp.ln2_b), N, C, nullptr),
                 "norm_forward");
    cuda_linear_forward(t_, a.fc_pre.get(), F, a.ln2.get(), w(lp.fc_w), w(lp.fc_b), N, C, F);
    if (c.mlp == MlpKind::SwiGlu)
      device_check(t_, t_.swiglu_forward(a.fc_act.get(), a.fc_pre.get(), N, hidden, nullptr), "swiglu_forward");
    else
      device_check(t_, t_.gelu_forward(a.fc_act.get(), a.fc_pre.get(), N * hidden, nullptr), "gelu_forward");
    cuda_linear_forward(t_, scratch_c_.get(), C, a.fc_act.get(), w(lp.mproj_w), w(lp.mproj_b), N, hidden, C);
    const moas_cuda_dropout mlp_drop = context(l, p).site((uint32_t)DropoutSiteId::MlpOut);
    device_check(t_, t_.dropout_apply(scratch_c_.get(), N, C, nullptr, &mlp_drop, nullptr), "dropout");
    device_check(t_, t_.add(x_next, a.mid.get(), scratch_c_.get(), N * C, nullptr), "add");
  }

  aux_ = training && aux_layers() > 0 ? aux_sum / (double)aux_layers() : 0.0;

  device_check(t_,
               t_.norm_forward(rms, lnf_.get(), lnf_mean_.get(), lnf_rstd_.get(), residual_[L].get(), w(lnf_w_),
                               w(lnf_b_), N, C, nullptr),
               "norm_forward");
  cuda_linear_forward(t_, logits_.get(), V, lnf_.get(), w(wte_), nullptr, N, C, V);
  device_check(t_,
               t_.cross_entropy_forward(ce_lse_.get(), loss_.get(), n_counted_.get(), logits_.get(),
                                        targets ? targets_.get() : nullptr, N, V, nullptr),
               "cross_entropy_forward");
  double loss = 0;
  counted_ = 0;
  if (targets) {
    loss_.download(&loss, 1);
    n_counted_.download(&counted_, 1);
  } else {
    device_check(t_, t_.synchronize(nullptr), "forward");
  }
  if (training) {
    mirror_.training_forwards++;
    backward_ready_ = targets != nullptr;
  }
  if (cache) cache->length += Tn;
  return loss;
}

// Model::backward in exact reverse of the forward, as there.
void CudaModel::backward() {
  backward_ready_ = false;  // a second backward of one forward would add its gradients twice
  const ModelConfig &c = config_;
  const int64_t N = positions_.batch() * positions_.seq(), C = c.n_embd, V = c.vocab_size, hidden = c.mlp_hidden;
  const int64_t F = c.mlp == MlpKind::SwiGlu ? 2 * hidden : hidden;
  const int32_t rms = c.norm == NormKind::RMSNorm;
  const uint32_t L = (uint32_t)c.n_layer;
  const double aux_scale = aux_layers() > 0 ? c.aux_weight() / (double)aux_layers() : 0.0;
  for (DeviceArray<float> *buf : {&d_res_, &d_c_, &d_ln_}) buf->reserve(t_, N * C);
  norm_scratch_.reserve(t_, moas_cuda_norm_backward_scratch(N, C));
  d_hidden_.reserve(t_, N * hidden);
  d_pre_.reserve(t_, N * F);
  d_logits_.reserve(t_, N * V);
  auto norm_backward = [&](float *dw, float *db, const float *inp, const float *weight, const float *mean,
                           const float *rstd) {
    device_check(t_,
                 t_.norm_backward(rms, d_res_.get(), dw, db, norm_scratch_.get(), d_ln_.get(), inp, weight, mean, rstd,
                                  N, C, nullptr),
                 "norm_backward");
  };
  auto copy_residual_grad = [&] {
    device_check(t_, t_.copy(d_c_.get(), d_res_.get(), (size_t)(N * C) * sizeof(float), nullptr), "copy");
  };

  if (counted_ > 0)
    device_check(t_,
                 t_.cross_entropy_backward(d_logits_.get(), logits_.get(), ce_lse_.get(), targets_.get(), N, V,
                                           (float)(1.0 / (double)counted_), nullptr),
                 "cross_entropy_backward");
  else
    d_logits_.zero(N * V);
  cuda_linear_backward(t_, d_ln_.get(), false, g(wte_), nullptr, d_logits_.get(), lnf_.get(), w(wte_), N, C, V);
  d_res_.zero(N * C);
  norm_backward(g(lnf_w_), g(lnf_b_), residual_[L].get(), w(lnf_w_), lnf_mean_.get(), lnf_rstd_.get());

  for (int64_t l = (int64_t)L - 1; l >= 0; l--) {
    const LayerParams &lp = layers_[(size_t)l];
    LayerActivations &a = acts_[(size_t)l];

    // MLP sub-block.
    copy_residual_grad();
    const moas_cuda_dropout mlp_drop = context((uint32_t)l, c.dropout).site((uint32_t)DropoutSiteId::MlpOut);
    device_check(t_, t_.dropout_apply(d_c_.get(), N, C, nullptr, &mlp_drop, nullptr), "dropout");
    cuda_linear_backward(t_, d_hidden_.get(), false, g(lp.mproj_w), g(lp.mproj_b), d_c_.get(), a.fc_act.get(),
                         w(lp.mproj_w), N, hidden, C);
    if (c.mlp == MlpKind::SwiGlu)
      device_check(t_, t_.swiglu_backward(d_pre_.get(), d_hidden_.get(), a.fc_pre.get(), N, hidden, nullptr),
                   "swiglu_backward");
    else
      device_check(t_, t_.gelu_backward(d_pre_.get(), d_hidden_.get(), a.fc_pre.get(), N * hidden, nullptr),
                   "gelu_backward");
    cuda_linear_backward(t_, d_ln_.get(), false, g(lp.fc_w), g(lp.fc_b), d_pre_.get(), a.ln2.get(), w(lp.fc_w), N, C,
                         F);
    norm_backward(g(lp.ln2_w), g(lp.ln2_b), a.mid.get(), w(lp.ln2_w), a.ln2_mean.get(), a.ln2_rstd.get());

    // Attention sub-block.
    copy_residual_grad();
    d_ln_.zero(N * C);
    attn_[(size_t)l]->backward(params_.values(), params_.grads(), a.ln1.get(), d_c_.get(), d_ln_.get(),
                               context((uint32_t)l, c.dropout), aux_scale);
    norm_backward(g(lp.ln1_w), g(lp.ln1_b), residual_[(size_t)l].get(), w(lp.ln1_w), a.ln1_mean.get(),
                  a.ln1_rstd.get());
  }

  const moas_cuda_dropout embedding_drop = context(L, c.dropout).site((uint32_t)DropoutSiteId::Embedding);
  device_check(t_, t_.dropout_apply(d_res_.get(), N, C, nullptr, &embedding_drop, nullptr), "dropout");
  device_check(t_,
               t_.embedding_backward(g(wte_), g(wpe_), d_res_.get(), tokens_.get(), positions_.batch(),
                                     positions_.seq(), C, V, nullptr),
               "embedding_backward");
  device_check(t_, t_.synchronize(nullptr), "backward");
}

bool CudaModel::adamw_step(const AdamWSettings &settings, double grad_norm) {
  backward_ready_ = false;
  if (!params_.adamw_step(settings, mirror_.optimizer.step + 1, grad_norm)) return false;
  mirror_.optimizer.step++;
  return true;
}

bool CudaModel::logits_finite() {
  return std::isfinite(params_.norm_of(logits_.get(), positions_.batch() * positions_.seq() * config_.vocab_size));
}

void CudaModel::logits(float *out) const {
  logits_.download(out, positions_.batch() * positions_.seq() * config_.vocab_size);
}

void CudaModel::last_logits(float *out) {
  const int64_t B = positions_.batch(), Tn = positions_.seq(), V = config_.vocab_size;
  last_logits_.reserve(t_, B * V);
  device_check(t_, t_.copy_rows(last_logits_.get(), V, logits_.get() + (Tn - 1) * V, Tn * V, V, B, nullptr),
               "copy_rows");
  last_logits_.download(out, B * V);
}

}  // namespace moas
