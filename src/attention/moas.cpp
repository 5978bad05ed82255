#include "attention/moas.hpp"

#include <cmath>

#include "attention/balance_loss.hpp"
#include "attention/moas_mix.hpp"
#include "attention/routing.hpp"
#include "ops/linear.hpp"
#include "ops/mlp.hpp"
#include "ops/softmax.hpp"

namespace moas {

std::vector<std::string> moas_branch_prefixes(const ModelConfig &config, const std::string &prefix) {
  static const char *const kDefaultNames[] = {"mha", "gqa", "mqa"};
  const bool default_names = config.moas.default_branches(config.n_head);
  std::vector<std::string> prefixes;
  for (size_t k = 0; k < config.moas.branch_kv_heads.size(); k++)
    prefixes.push_back(prefix + (default_names ? kDefaultNames[k] : "b" + std::to_string(k)) + ".");
  return prefixes;
}

template <typename T>
MoasAttention<T>::MoasAttention(const ModelConfig &config, ParamTable<T> &params, const std::string &prefix)
    : mode_(config.moas.mode),
      width_(config.n_embd),
      n_branches_((int64_t)config.moas.branch_kv_heads.size()),
      router_hidden_(config.n_embd / 4) {
  branches_.reserve((size_t)n_branches_);
  const std::vector<std::string> branch_prefixes = moas_branch_prefixes(config, prefix);
  for (int64_t k = 0; k < n_branches_; k++) {
    const SchemeShape shape{config.n_embd, config.n_head, config.moas.branch_kv_heads[(size_t)k], config.bias};
    branches_.emplace_back(params, branch_prefixes[(size_t)k], shape, (uint32_t)k);
  }
  if (routed()) {
    w1_ = params.add(prefix + "router.0.weight", {router_hidden_, width_});
    if (config.bias) b1_ = params.add(prefix + "router.0.bias", {router_hidden_});
    w2_ = params.add(prefix + "router.2.weight", {n_branches_, router_hidden_});
    if (config.bias) b2_ = params.add(prefix + "router.2.bias", {n_branches_});
  }
  // Each branch is a scheme of its own, with its own CoPE table (SPEC §8: attn.{branch}.cope.weight).
  for (const std::string &branch_prefix : branch_prefixes)
    options_.push_back(register_attention_options(params, branch_prefix, config));
  routed_rows_.resize((size_t)n_branches_);
  rows_.resize((size_t)n_branches_);
  z_.resize((size_t)n_branches_);
}

// Gates, their dropout, the branch each token goes to (top1), and the load-balance loss.
template <typename T>
void MoasAttention<T>::route(const BlockContext<T> &ctx) {
  const int64_t N = ctx.tokens(), S = n_branches_;
  gates_.resize((size_t)(N * S));
  mix_.resize((size_t)(N * S));
  aux_ = 0.0;
  for (int64_t k = 0; k < S; k++) rows_[(size_t)k] = ctx.all_rows;
  if (!routed()) {
    std::fill(gates_.begin(), gates_.end(), T(1) / T(S));
    std::fill(mix_.begin(), mix_.end(), T(1) / T(S));
    mean_gate_.assign((size_t)S, 1.0 / (double)S);
    return;
  }
  std::copy(gates_.begin(), gates_.end(), mix_.begin());
  dropout_apply(mix_.data(), N * S, ctx.site((uint32_t)DropoutSiteId::Gates));
  aux_ = moas_balance_loss(gates_.data(), N, S, &mean_gate_);
  if (mode_ != MoasMode::Top1) return;
  choice_.resize((size_t)N);
  for (int64_t n = 0; n < N; n++) choice_[(size_t)n] = (int32_t)argmax_lower(gates_.data() + n * S, S);
  for (int64_t k = 0; k < S; k++) {
    routed_rows_[(size_t)k].select(
        ctx.batch, ctx.seq, [&](int64_t n) { return choice_[(size_t)n] == k; }, ctx.past);
    rows_[(size_t)k] = &routed_rows_[(size_t)k];
  }
}

template <typename T>
void MoasAttention<T>::forward(const ParamTable<T> &params, const T *x, T *y, const BlockContext<T> &ctx, bool) {
  const int64_t N = ctx.tokens(), S = n_branches_, C = width_, F = router_hidden_;
  if (routed()) {
    hidden_pre_.resize((size_t)(N * F));
    hidden_.resize((size_t)(N * F));
    gates_.resize((size_t)(N * S));
    linear_forward(hidden_pre_.data(), F, x, params.value(w1_), params.value_or_null(b1_), N, C, F, ctx.decode);
    gelu_forward(hidden_.data(), hidden_pre_.data(), N * F);
    linear_forward(gates_.data(), S, hidden_.data(), params.value(w2_), params.value_or_null(b2_), N, F, S);
    softmax_rows(gates_.data(), S, gates_.data(), S, N, S);
  }
  route(ctx);

  std::fill(y, y + N * C, T(0));
  for (int64_t k = 0; k < S; k++) {
    const RowSet &rows = *rows_[(size_t)k];
    std::vector<T> &z = z_[(size_t)k];
    z.resize((size_t)(rows.size() * C));
    branches_[(size_t)k].forward(params, x, rows, z.data(), ctx, options_[(size_t)k]);
    scale_.resize((size_t)rows.size());
    for (int64_t r = 0; r < rows.size(); r++) scale_[(size_t)r] = mix_[(size_t)(rows.row[(size_t)r] * S + k)];
    scatter_add_rows(y, C, z.data(), C, rows.row, C, scale_.data());
  }
}

template <typename T>
void MoasAttention<T>::backward(ParamTable<T> &params, const T *x, T *dy, T *dx, const BlockContext<T> &ctx,
                                double aux_grad_scale) {
  const int64_t N = ctx.tokens(), S = n_branches_, C = width_, F = router_hidden_;
  d_mix_.assign((size_t)(N * S), T(0));
  for (int64_t k = 0; k < S; k++) {
    const RowSet &rows = *rows_[(size_t)k];
    const int64_t m = rows.size();
    const T *z = z_[(size_t)k].data();
    dz_.resize((size_t)(m * C));
    gather_rows(dz_.data(), C, dy, C, rows.row, C);
    parallel_for(m, m * C >= kParallelGrain, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; r++) {
        const int64_t slot = rows.row[(size_t)r] * S + k;
        d_mix_[(size_t)slot] = moas_mix_row_backward(dz_.data() + r * C, z + r * C, mix_[(size_t)slot], C);
      }
    });
    branches_[(size_t)k].backward(params, x, dz_.data(), dx, ctx, options_[(size_t)k]);
  }
  if (!routed()) return;

  // d_mix -> d_gates (through the gate dropout), plus the load-balance gradient; then through the softmax and the
  // router MLP.
  T *d_gates = d_mix_.data();
  dropout_apply(d_gates, N * S, ctx.site((uint32_t)DropoutSiteId::Gates));
  moas_balance_loss_backward(d_gates, N, S, mean_gate_, aux_grad_scale);
  softmax_rows_backward(d_gates, S, d_gates, gates_.data(), N, S);
  d_hidden_.resize((size_t)(N * F));
  linear_backward(d_hidden_.data(), false, params.grad(w2_), params.grad_or_null(b2_), d_gates, hidden_.data(),
                  params.value(w2_), N, F, S);
  gelu_backward(d_hidden_.data(), d_hidden_.data(), hidden_pre_.data(), N * F);
  linear_backward(dx, true, params.grad(w1_), params.grad_or_null(b1_), d_hidden_.data(), x, params.value(w1_), N, C,
                  F);
}

// share = f-hat (SPEC §8): top1 the argmax shares, soft and static the mean gates.
template <typename T>
RouterStats moas_router_stats(MoasMode mode, const T *gates, int64_t N, int64_t S, const std::vector<double> &mean_gate,
                              double aux) {
  RouterStats st;
  st.attention = MOAS_ATTENTION_MOAS;
  st.mean_gate = mean_gate;
  st.top_share = mean_gate;  // without a router there is no argmax: every branch takes every token
  if (mode != MoasMode::Static) {
    st.top_share.assign((size_t)S, 0.0);
    for (int64_t n = 0; n < N; n++) st.top_share[(size_t)argmax_lower(gates + n * S, S)] += 1.0 / (double)N;
  }
  st.entropy = 0;
  for (int64_t n = 0; n < N * S; n++)
    if (gates[n] > T(0)) st.entropy -= (double)gates[n] * std::log((double)gates[n]) / (double)N;
  st.share = mode == MoasMode::Top1 ? st.top_share : mean_gate;
  st.aux_loss = aux;
  st.mean_shared_weight = st.mean_routed_weight = 0;
  return st;
}

// The last forward's statistics, computed when asked (a forward does not pay for them): backward reads the gates,
// their means and the loss but never writes them.
template <typename T>
bool MoasAttention<T>::router_stats(RouterStats *out) const {
  const int64_t N = (int64_t)gates_.size() / n_branches_;
  *out = moas_router_stats(mode_, gates_.data(), N, n_branches_, mean_gate_, aux_);
  return true;
}

template RouterStats moas_router_stats(MoasMode, const float *, int64_t, int64_t, const std::vector<double> &, double);
template RouterStats moas_router_stats(MoasMode, const double *, int64_t, int64_t, const std::vector<double> &,
                                       double);
template class MoasAttention<float>;
template class MoasAttention<double>;

}  // namespace moas
