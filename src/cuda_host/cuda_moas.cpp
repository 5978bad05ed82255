#include "cuda_host/cuda_moas.hpp"

#include <algorithm>

#include "attention/balance_loss.hpp"
#include "attention/moas.hpp"
#include "attention/routing.hpp"
#include "cuda_host/cuda_linear.hpp"

namespace moas {

CudaMoas::CudaMoas(const moas_cuda_backend &t, const ModelConfig &config, const ParamTable<float> &params,
                   const std::string &prefix)
    : t_(t),
      mode_(config.moas.mode),
      width_(config.n_embd),
      n_branches_((int64_t)config.moas.branch_kv_heads.size()),
      router_hidden_(config.n_embd / 4) {
  const std::vector<std::string> branch_prefixes = moas_branch_prefixes(config, prefix);
  branches_.reserve((size_t)n_branches_);
  for (int64_t k = 0; k < n_branches_; k++)
    branches_.emplace_back(t, config, params, branch_prefixes[(size_t)k], config.moas.branch_kv_heads[(size_t)k],
                           (uint32_t)k);
  if (routed()) {
    w1_ = params.find(prefix + "router.0.weight").offset;
    b1_ = params.offset_if_present(prefix + "router.0.bias");
    w2_ = params.find(prefix + "router.2.weight").offset;
    b2_ = params.offset_if_present(prefix + "router.2.bias");
  }
  routed_rows_.resize((size_t)n_branches_);
  rows_.resize((size_t)n_branches_);
  z_.resize((size_t)n_branches_);
}

// MoasAttention::route on the host from the downloaded gates, then each branch's query rows and mixing weights
// uploaded for the device steps.
void CudaMoas::route(const CudaContext &ctx) {
  const int64_t N = ctx.tokens(), S = n_branches_, B = ctx.batch;
  mix_.resize((size_t)(N * S));
  aux_ = 0.0;
  if (!routed()) {
    gates_.assign((size_t)(N * S), 1.0f / (float)S);
    std::fill(mix_.begin(), mix_.end(), 1.0f / (float)S);
    mean_gate_.assign((size_t)S, 1.0 / (double)S);
  } else {
    std::copy(gates_.begin(), gates_.end(), mix_.begin());
    const moas_cuda_dropout gate_drop = ctx.site((uint32_t)DropoutSiteId::Gates);
    dropout_apply(mix_.data(), N * S, Dropout{gate_drop.p, gate_drop.key});
    aux_ = moas_balance_loss(gates_.data(), N, S, &mean_gate_);
  }
  mix_d_.upload(t_, mix_.data(), N * S);

  if (mode_ == MoasMode::Top1) {
    std::vector<int32_t> choice((size_t)N);
    for (int64_t n = 0; n < N; n++) choice[(size_t)n] = (int32_t)argmax_lower(gates_.data() + n * S, S);
    std::vector<int64_t> row((size_t)(S * N)), begin((size_t)(S * (B + 1)));
    std::vector<int32_t> pos((size_t)(S * N));
    for (int64_t k = 0; k < S; k++) {
      RowSet &rs = routed_rows_[(size_t)k];
      rs.select(ctx.batch, ctx.seq, [&](int64_t n) { return choice[(size_t)n] == k; }, ctx.past);
      std::copy(rs.row.begin(), rs.row.end(), row.begin() + k * N);
      std::copy(rs.pos.begin(), rs.pos.end(), pos.begin() + k * N);
      std::copy(rs.begin.begin(), rs.begin.end(), begin.begin() + k * (B + 1));
    }
    routed_row_.upload(t_, row.data(), S * N);
    routed_pos_.upload(t_, pos.data(), S * N);
    routed_begin_.upload(t_, begin.data(), S * (B + 1));
  }

  // A branch that takes every token (soft, static, or top-1 when all chose it) runs Scheme's dense path.
  std::vector<float> scale((size_t)(S * N));
  for (int64_t k = 0; k < S; k++) {
    const RowSet *routed = mode_ == MoasMode::Top1 ? &routed_rows_[(size_t)k] : nullptr;
    CudaRows &rows = rows_[(size_t)k];
    if (!routed || routed->all)
      rows = CudaRows{N, ctx.rows, ctx.pos, ctx.begin, true};
    else
      rows = CudaRows{routed->size(), routed_row_.get() + k * N, routed_pos_.get() + k * N,
                      routed_begin_.get() + k * (B + 1), false};
    for (int64_t r = 0; r < rows.m; r++)
      scale[(size_t)(k * N + r)] = mix_[(size_t)((routed ? routed->row[(size_t)r] : r) * S + k)];
  }
  scale_.upload(t_, scale.data(), S * N);
}

void CudaMoas::forward(const float *values, const float *x, float *y, const CudaContext &ctx, bool) {
  const int64_t N = ctx.tokens(), S = n_branches_, C = width_, F = router_hidden_;
  auto value = [&](int64_t offset) { return offset < 0 ? nullptr : values + offset; };
  if (routed()) {
    hidden_pre_.reserve(t_, N * F);
    hidden_.reserve(t_, N * F);
    gates_d_.reserve(t_, N * S);
    cuda_linear_forward(t_, hidden_pre_.get(), F, x, values + w1_, value(b1_), N, C, F);
    device_check(t_, t_.gelu_forward(hidden_.get(), hidden_pre_.get(), N * F, nullptr), "gelu_forward");
    cuda_linear_forward(t_, gates_d_.get(), S, hidden_.get(), values + w2_, value(b2_), N, F, S);
    device_check(t_, t_.router_softmax(gates_d_.get(), S, gates_d_.get(), S, N, S, nullptr, nullptr, 1, nullptr),
                 "router_softmax");
    gates_.resize((size_t)(N * S));
    gates_d_.download(gates_.data(), N * S);
  }
  route(ctx);

  device_check(t_, t_.zero(y, (size_t)(N * C) * sizeof(float), nullptr), "zero");
  for (int64_t k = 0; k < S; k++) {
    const CudaRows &rows = rows_[(size_t)k];
    DeviceArray<float> &z = z_[(size_t)k];
    z.reserve(t_, rows.m * C);
    branches_[(size_t)k].forward_rows(values, x, rows, z.get(), ctx);
    device_check(t_,
                 t_.scatter_add_rows(y, C, z.get(), C, rows.row, scale_.get() + k * N, rows.begin + ctx.batch, rows.m,
                                     C, nullptr),
                 "scatter_add_rows");
  }
}

void CudaMoas::backward(const float *values, float *grads, const float *x, float *dy, float *dx, const CudaContext &ctx,
                        double aux_grad_scale) {
  const int64_t N = ctx.tokens(), S = n_branches_, C = width_, F = router_hidden_;
  auto grad = [&](int64_t offset) { return offset < 0 ? nullptr : grads + offset; };
  d_mix_.reserve(t_, N * S);
  d_mix_.zero(N * S);
  for (int64_t k = 0; k < S; k++) {
    const CudaRows &rows = rows_[(size_t)k];
    const int64_t *count = rows.begin + ctx.batch;
    dz_.reserve(t_, rows.m * C);
    device_check(t_, t_.gather_rows(dz_.get(), C, dy, C, rows.row, count, rows.m, C, nullptr), "gather_rows");
    device_check(t_,
                 t_.moas_mix_backward(d_mix_.get(), dz_.get(), z_[(size_t)k].get(), mix_d_.get(), rows.row, count,
                                      rows.m, C, S, k, nullptr),
                 "moas_mix_backward");
    branches_[(size_t)k].backward_rows(values, grads, x, dz_.get(), dx, ctx);
  }
  if (!routed()) return;

  // d_mix -> d_gates (through the gate dropout), plus the load-balance gradient; then through the softmax and the
  // router MLP. The balance term is one float per column (moas_balance_loss_backward's), added to every token's row;
  // the softmax backward writes its own buffer, as the table does not promise it works in place.
  const moas_cuda_dropout gate_drop = ctx.site((uint32_t)DropoutSiteId::Gates);
  device_check(t_, t_.dropout_apply(d_mix_.get(), N, S, nullptr, &gate_drop, nullptr), "dropout");
  const std::vector<float> balance = moas_balance_gradient_row<float>(N, S, mean_gate_, aux_grad_scale);
  balance_grad_.upload(t_, balance.data(), S);
  balance_rows_.reserve(t_, N * S);
  device_check(t_, t_.fill_rows(balance_rows_.get(), S, balance_grad_.get(), N, S, nullptr), "fill_rows");
  device_check(t_, t_.add(d_mix_.get(), d_mix_.get(), balance_rows_.get(), N * S, nullptr), "add");
  d_logits_.reserve(t_, N * S);
  device_check(t_, t_.router_softmax_backward(d_logits_.get(), S, d_mix_.get(), gates_d_.get(), N, S, nullptr),
               "router_softmax_backward");
  d_hidden_.reserve(t_, N * F);
  cuda_linear_backward(t_, d_hidden_.get(), false, grads + w2_, grad(b2_), d_logits_.get(), hidden_.get(), values + w2_,
                       N, F, S);
  device_check(t_, t_.gelu_backward(d_hidden_.get(), d_hidden_.get(), hidden_pre_.get(), N * F, nullptr),
               "gelu_backward");
  cuda_linear_backward(t_, dx, true, grads + w1_, grad(b1_), d_hidden_.get(), x, values + w1_, N, C, F);
}

// MoasAttention::router_stats, from the last forward's gates (on the host for the routing): a forward does not pay
// for them.
bool CudaMoas::router_stats(RouterStats *out) const {
  *out = moas_router_stats(mode_, gates_.data(), (int64_t)gates_.size() / n_branches_, n_branches_, mean_gate_, aux_);
  return true;
}

}  // namespace moas
