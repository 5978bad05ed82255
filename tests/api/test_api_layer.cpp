// The attention-layer ABI (moas_layer_*): it computes what a model's attention sub-block computes on the same
// weights, trains, is batch-invariant and thread-safe across layers, and refuses bad input without harm.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "api_helpers.hpp"
#include "moas.h"

namespace {

using namespace api_test;


// max|a - b| <= tol * max|b| (SPEC §9).
template <typename A, typename B>
bool close_to(const std::vector<A> &a, const std::vector<B> &b, double tol) {
  if (a.size() != b.size()) return false;
  double scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); i++) {
    scale = std::max(scale, std::fabs((double)b[i]));
    diff = std::max(diff, std::fabs((double)a[i] - (double)b[i]));
  }
  UNSCOPED_INFO("max difference " << diff << " of scale " << scale);
  return diff <= tol * scale;
}


std::vector<std::pair<std::string, size_t>> layer_parameters(const moas_layer *l) {
  size_t count = 0;
  REQUIRE(moas_layer_parameter_count(l, &count) == MOAS_OK);
  std::vector<std::pair<std::string, size_t>> out;
  for (size_t i = 0; i < count; i++) {
    moas_parameter_info info;
    info.struct_size = sizeof info;
    REQUIRE(moas_layer_parameter_info_at(l, i, &info) == MOAS_OK);
    out.emplace_back(info.name, (size_t)info.numel);
  }
  return out;
}


std::vector<float> forward(moas_layer *l, const std::vector<float> &x, int B, int Tn, int training = 0) {
  std::vector<float> y(x.size());
  const moas_status s = moas_layer_forward(l, x.data(), y.data(), x.size(), B, Tn, training, nullptr);
  INFO(moas_last_error());
  REQUIRE(s == MOAS_OK);
  return y;
}

// LayerNorm over rows of width C with unit gain and no bias (the model's initial ln weights), in double.
std::vector<double> layer_norm(const std::vector<double> &x, size_t C, std::vector<double> *rstd) {
  std::vector<double> out(x.size());
  rstd->resize(x.size() / C);
  for (size_t r = 0; r < x.size() / C; r++) {
    double mean = 0, var = 0;
    for (size_t c = 0; c < C; c++) mean += x[r * C + c];
    mean /= (double)C;
    for (size_t c = 0; c < C; c++) var += (x[r * C + c] - mean) * (x[r * C + c] - mean);
    (*rstd)[r] = 1.0 / std::sqrt(var / (double)C + 1e-5);
    for (size_t c = 0; c < C; c++) out[r * C + c] = (x[r * C + c] - mean) * (*rstd)[r];
  }
  return out;
}

// A one-layer model whose MLP adds nothing (c_proj = 0) is  logits = ln_f(x0 + Attn(ln_1(x0))) wte^T  with
// x0 = wte[token] (+ wpe[pos]). Rebuilding that around the layer, from the same weights, must give the model's
// logits; and backpropagating the model's cross-entropy by hand to the attention output must give the same
// parameter gradients as the model's backward.
void check_layer_matches_model(moas_model_config mc, moas_layer_config lc) {
  lc.residual = 0;  // the model adds the residual around ln_1 -> attention
  mc.n_layer = 1;
  mc.dropout = 0.0f;
  mc.n_embd = lc.n_embd;
  mc.n_head = lc.n_head;
  mc.n_kv_head = lc.attention == MOAS_ATTENTION_MOAS ? lc.n_head : lc.n_kv_head;
  mc.block_size = lc.max_seq_len;
  mc.attention = lc.attention;
  mc.position = lc.position == MOAS_POSITION_LEARNED ? MOAS_POSITION_LEARNED : lc.position;
  mc.moas_mode = lc.moas_mode;
  std::memcpy(mc.moas_branch_kv_heads, lc.moas_branch_kv_heads, sizeof mc.moas_branch_kv_heads);
  mc.moas_aux_weight = lc.moas_aux_weight;
  mc.head_selection = lc.head_selection;
  mc.cope_max_pos = lc.cope_max_pos;
  mc.window_size = lc.window_size;
  ModelPtr model = make_model(mc);
  LayerPtr layer = make_layer(lc);

  // The layer's weights (perturbed so CoPE embeddings and routers matter) go into the model.
  for (const auto &[name, numel] : layer_parameters(layer.get())) {
    const std::vector<float> values = random_floats(numel, (uint32_t)name.size() * 31u, 0.3f);
    REQUIRE(moas_layer_parameter_write(layer.get(), name.c_str(), values.data(), numel) == MOAS_OK);
    const std::string in_model = "transformer.h.0." + name;
    INFO(in_model << ": " << moas_last_error());
    REQUIRE(moas_parameter_write(model.get(), in_model.c_str(), values.data(), numel) == MOAS_OK);
  }
  const size_t C = (size_t)lc.n_embd, V = (size_t)mc.vocab_size, hidden = 4 * C;
  const std::vector<float> zero(C * hidden, 0.0f);
  REQUIRE(moas_parameter_write(model.get(), "transformer.h.0.mlp.c_proj.weight", zero.data(), zero.size()) ==
          MOAS_OK);

  const int B = 2, Tn = 11;
  const size_t N = (size_t)(B * Tn);
  const std::vector<int32_t> tokens = sequence(N, mc.vocab_size, 3), targets = sequence(N, mc.vocab_size, 4);
  float loss = 0;
  REQUIRE(moas_zero_grad(model.get()) == MOAS_OK);
  REQUIRE(moas_forward(model.get(), tokens.data(), targets.data(), B, Tn, 1, &loss, nullptr) == MOAS_OK);
  REQUIRE(moas_backward(model.get()) == MOAS_OK);
  const std::vector<float> model_logits = logits_of(model.get(), N * V);

  const std::vector<float> wte = read_param(model.get(), "transformer.wte.weight");
  std::vector<float> wpe;
  if (mc.position == MOAS_POSITION_LEARNED) wpe = read_param(model.get(), "transformer.wpe.weight");
  std::vector<double> x0(N * C);
  for (size_t n = 0; n < N; n++)
    for (size_t c = 0; c < C; c++)
      x0[n * C + c] = wte[(size_t)tokens[n] * C + c] + (wpe.empty() ? 0.0 : wpe[(n % (size_t)Tn) * C + c]);
  std::vector<double> rstd1, rstdf;
  const std::vector<double> ln1 = layer_norm(x0, C, &rstd1);
  const std::vector<float> ln1_f(ln1.begin(), ln1.end());
  REQUIRE(moas_layer_zero_grad(layer.get()) == MOAS_OK);
  const std::vector<float> attn = forward(layer.get(), ln1_f, B, Tn, 1);
  std::vector<double> h(N * C);
  for (size_t i = 0; i < N * C; i++) h[i] = x0[i] + attn[i];
  const std::vector<double> lnf = layer_norm(h, C, &rstdf);
  std::vector<double> logits(N * V, 0.0);
  for (size_t n = 0; n < N; n++)
    for (size_t v = 0; v < V; v++)
      for (size_t c = 0; c < C; c++) logits[n * V + v] += lnf[n * C + c] * wte[v * C + c];
  REQUIRE(close_to(model_logits, logits, 2e-4));

  // Cross-entropy (mean over N) back to h through the tied head and ln_f; the MLP path adds nothing (c_proj = 0).
  std::vector<float> dh(N * C);
  for (size_t n = 0; n < N; n++) {
    double mx = -1e300, sum = 0;
    for (size_t v = 0; v < V; v++) mx = std::max(mx, logits[n * V + v]);
    for (size_t v = 0; v < V; v++) sum += std::exp(logits[n * V + v] - mx);
    std::vector<double> dl(C, 0.0);
    for (size_t v = 0; v < V; v++) {
      const double p = std::exp(logits[n * V + v] - mx) / sum - (v == (size_t)targets[n] ? 1.0 : 0.0);
      for (size_t c = 0; c < C; c++) dl[c] += p / (double)N * wte[v * C + c];
    }
    double mean_dl = 0, mean_dl_xhat = 0;
    for (size_t c = 0; c < C; c++) {
      mean_dl += dl[c] / (double)C;
      mean_dl_xhat += dl[c] * lnf[n * C + c] / (double)C;
    }
    for (size_t c = 0; c < C; c++)
      dh[n * C + c] = (float)(rstdf[n] * (dl[c] - mean_dl - lnf[n * C + c] * mean_dl_xhat));
  }
  std::vector<float> dx(N * C);
  REQUIRE(moas_layer_backward(layer.get(), dh.data(), dx.data(), dx.size()) == MOAS_OK);
  for (const auto &[name, numel] : layer_parameters(layer.get())) {
    std::vector<float> from_layer(numel), from_model(numel);
    REQUIRE(moas_layer_gradient_read(layer.get(), name.c_str(), from_layer.data(), numel) == MOAS_OK);
    const std::string in_model = "transformer.h.0." + name;
    REQUIRE(moas_gradient_read(model.get(), in_model.c_str(), from_model.data(), numel) == MOAS_OK);
    INFO(name);
    REQUIRE(close_to(from_layer, from_model, 2e-3));
  }
}

}  // namespace

TEST_CASE("layer API: defaults are RustGPT's attention shape and names drop the model prefix", "[api][layer]") {
  moas_layer_config c;
  c.struct_size = sizeof c;
  REQUIRE(moas_layer_config_default(&c) == MOAS_OK);
  CHECK(c.abi_version == MOAS_ABI_VERSION);
  CHECK(c.n_embd == 128);
  CHECK(c.n_head == 8);
  CHECK(c.n_kv_head == 4);
  CHECK(c.max_seq_len == 80);
  CHECK(c.residual == 1);
  CHECK(c.window_size == 0);
  LayerPtr l = make_layer(c);
  const auto params = layer_parameters(l.get());
  REQUIRE(params.size() == 4);
  CHECK(params[0].first == "attn.q_proj.weight");
  CHECK(params[3].first == "attn.c_proj.weight");
}

TEST_CASE("layer API: the layer computes the model's attention on the same weights", "[api][layer]") {
  moas_model_config mc = small_config();
  moas_layer_config lc = layer_config();
  SECTION("GQA") { check_layer_matches_model(mc, lc); }
  SECTION("MHA with RoPE") {
    lc.n_kv_head = 4;
    lc.position = MOAS_POSITION_ROPE;
    check_layer_matches_model(mc, lc);
  }
  SECTION("MoAS soft (load-balance gradient included)") {
    lc.attention = MOAS_ATTENTION_MOAS;
    lc.moas_aux_weight = 0.3f;
    check_layer_matches_model(mc, lc);
  }
  SECTION("MoAS top-1") {
    lc.attention = MOAS_ATTENTION_MOAS;
    lc.moas_mode = MOAS_MODE_TOP1;
    check_layer_matches_model(mc, lc);
  }
  SECTION("MoH 1 shared + 2 of 3 routed, GQA") {
    lc.attention = MOAS_ATTENTION_MOH;
    lc.head_selection.strategy = MOAS_HEADS_MIXTURE;
    lc.head_selection.num_shared_heads = 1;
    lc.head_selection.num_active_routed_heads = 2;
    lc.head_selection.load_balance_weight = 0.3f;
    check_layer_matches_model(mc, lc);
  }
  SECTION("CoPE with a window, GQA") {
    lc.position = MOAS_POSITION_COPE;
    lc.cope_max_pos = 6;
    lc.window_size = 4;
    check_layer_matches_model(mc, lc);
  }
  SECTION("MoAS top-1 with CoPE (a table per branch)") {
    lc.attention = MOAS_ATTENTION_MOAS;
    lc.moas_mode = MOAS_MODE_TOP1;
    lc.position = MOAS_POSITION_COPE;
    lc.cope_max_pos = 8;
    check_layer_matches_model(mc, lc);
  }
  SECTION("MoH StaticPruning 2 of 4") {
    lc.attention = MOAS_ATTENTION_MOH;
    lc.head_selection.strategy = MOAS_HEADS_STATIC_PRUNING;
    lc.head_selection.num_active_heads = 2;
    check_layer_matches_model(mc, lc);
  }
}

TEST_CASE("layer API: a batch equals its sequences one at a time, and in place equals out of place",
          "[api][layer]") {
  moas_layer_config c = layer_config();
  c.attention = MOAS_ATTENTION_MOH;
  c.head_selection.strategy = MOAS_HEADS_MIXTURE;
  c.head_selection.num_shared_heads = 1;
  c.head_selection.num_active_routed_heads = 1;
  LayerPtr l = make_layer(c);
  const int B = 3, Tn = 9;
  const size_t per_seq = (size_t)Tn * (size_t)c.n_embd;
  const std::vector<float> x = random_floats(B * per_seq, 7);
  const std::vector<float> batched = forward(l.get(), x, B, Tn);
  for (int b = 0; b < B; b++) {
    const std::vector<float> one(x.begin() + b * (long)per_seq, x.begin() + (b + 1) * (long)per_seq);
    const std::vector<float> y = forward(l.get(), one, 1, Tn);
    // Other sequences change how tokens group into products, so the sums may round differently (SPEC §9).
    REQUIRE(close_to(y, std::vector<float>(batched.begin() + b * (long)per_seq,
                                           batched.begin() + (b + 1) * (long)per_seq), 1e-5));
  }
  std::vector<float> in_place = x;
  REQUIRE(moas_layer_forward(l.get(), in_place.data(), in_place.data(), in_place.size(), B, Tn, 0, nullptr) ==
          MOAS_OK);
  REQUIRE(in_place == batched);
}

TEST_CASE("layer API: Adam steps through the layer fit a target", "[api][layer]") {
  moas_layer_config c = layer_config();
  c.residual = 0;
  LayerPtr l = make_layer(c);
  moas_adamw_config adam;
  adam.struct_size = sizeof adam;
  REQUIRE(moas_adamw_config_default(&adam) == MOAS_OK);
  adam.lr = 1e-2f;
  adam.weight_decay = 0.0f;
  adam.grad_clip = 0.0f;
  const int B = 2, Tn = 8;
  const std::vector<float> x = random_floats((size_t)(B * Tn * c.n_embd), 1);
  const std::vector<float> target = random_floats(x.size(), 2, 0.5f);
  auto mse = [&](const std::vector<float> &y, std::vector<float> *dy) {
    double s = 0;
    for (size_t i = 0; i < y.size(); i++) {
      s += (y[i] - target[i]) * (y[i] - target[i]);
      (*dy)[i] = 2.0f * (y[i] - target[i]) / (float)y.size();
    }
    return s / (double)y.size();
  };
  std::vector<float> dy(x.size()), dx(x.size());
  double first = 0, last = 0;
  for (int step = 0; step < 60; step++) {
    REQUIRE(moas_layer_zero_grad(l.get()) == MOAS_OK);
    const std::vector<float> y = forward(l.get(), x, B, Tn, 1);
    last = mse(y, &dy);
    if (step == 0) first = last;
    REQUIRE(moas_layer_backward(l.get(), dy.data(), dx.data(), dx.size()) == MOAS_OK);
    float norm = 0;
    REQUIRE(moas_layer_optimizer_step(l.get(), &adam, &norm) == MOAS_OK);
    REQUIRE(norm > 0.0f);
  }
  INFO("mse " << first << " -> " << last);
  REQUIRE(last < 0.5 * first);
}

TEST_CASE("layer API: distinct layers run concurrently and bit-identically to one thread", "[api][layer]") {
  moas_layer_config c = layer_config();
  c.attention = MOAS_ATTENTION_MOAS;
  c.moas_mode = MOAS_MODE_TOP1;
  c.n_threads = 1;
  const int n_layers = 4, B = 2, Tn = 12, steps = 5;
  moas_adamw_config adam;
  adam.struct_size = sizeof adam;
  REQUIRE(moas_adamw_config_default(&adam) == MOAS_OK);
  // Each worker trains its own layer on its own data; REQUIRE is not thread-safe, so workers only record.
  auto train = [&](int id, std::vector<float> *out, moas_status *status) {
    moas_layer *l = nullptr;
    *status = moas_layer_create(&c, &l);
    const std::vector<float> x = random_floats((size_t)(B * Tn * c.n_embd), 100 + (uint32_t)id);
    std::vector<float> y(x.size()), dx(x.size());
    for (int s = 0; s < steps && *status == MOAS_OK; s++) {
      *status = moas_layer_forward(l, x.data(), y.data(), x.size(), B, Tn, 1, nullptr);
      if (*status == MOAS_OK) *status = moas_layer_backward(l, y.data(), dx.data(), dx.size());
      if (*status == MOAS_OK) *status = moas_layer_optimizer_step(l, &adam, nullptr);
    }
    if (*status == MOAS_OK) *status = moas_layer_forward(l, x.data(), y.data(), x.size(), B, Tn, 0, nullptr);
    *out = y;
    moas_layer_destroy(l);
  };
  std::vector<std::vector<float>> alone(n_layers), together(n_layers);
  std::vector<moas_status> status_alone(n_layers), status_together(n_layers);
  for (int i = 0; i < n_layers; i++) train(i, &alone[(size_t)i], &status_alone[(size_t)i]);
  std::vector<std::thread> workers;
  for (int i = 0; i < n_layers; i++)
    workers.emplace_back(train, i, &together[(size_t)i], &status_together[(size_t)i]);
  for (auto &w : workers) w.join();
  for (int i = 0; i < n_layers; i++) {
    REQUIRE(status_alone[(size_t)i] == MOAS_OK);
    REQUIRE(status_together[(size_t)i] == MOAS_OK);
    REQUIRE(together[(size_t)i] == alone[(size_t)i]);
  }
  REQUIRE(alone[0] != alone[1]);
}

TEST_CASE("layer API: MoH gates and router statistics of the last forward", "[api][layer]") {
  moas_layer_config c = layer_config();
  c.n_head = 8;
  c.attention = MOAS_ATTENTION_MOH;
  c.head_selection.strategy = MOAS_HEADS_MIXTURE;
  c.head_selection.num_shared_heads = 2;
  c.head_selection.num_active_routed_heads = 3;
  LayerPtr l = make_layer(c);
  int32_t width = -1;
  REQUIRE(moas_layer_gates(l.get(), nullptr, 0, &width) == MOAS_ERR_NO_FORWARD);
  const int B = 2, Tn = 10;
  forward(l.get(), random_floats((size_t)(B * Tn * c.n_embd), 5), B, Tn, 1);
  REQUIRE(moas_layer_gates(l.get(), nullptr, 0, &width) == MOAS_OK);
  REQUIRE(width == 8);
  std::vector<float> gates((size_t)(B * Tn * width));
  REQUIRE(moas_layer_gates(l.get(), gates.data(), gates.size() - 1, &width) == MOAS_ERR_SIZE_MISMATCH);
  REQUIRE(moas_layer_gates(l.get(), gates.data(), gates.size(), &width) == MOAS_OK);
  for (int n = 0; n < B * Tn; n++) {
    int active = 0;
    for (int h = 0; h < width; h++) active += gates[(size_t)(n * width + h)] != 0.0f;
    REQUIRE(active == 5);
  }
  moas_layer_router_stats st;
  st.struct_size = sizeof st;
  REQUIRE(moas_layer_get_router_stats(l.get(), &st) == MOAS_OK);
  REQUIRE(st.attention == MOAS_ATTENTION_MOH);
  REQUIRE(st.n_routes == 6);
  double f_sum = 0;
  for (int i = 0; i < st.n_routes; i++) f_sum += st.top_share[i];
  REQUIRE(f_sum == Approx(3.0).epsilon(1e-5));

  LayerPtr plain = make_layer(layer_config());
  forward(plain.get(), random_floats((size_t)(B * Tn * 32), 5), B, Tn);
  REQUIRE(moas_layer_get_router_stats(plain.get(), &st) == MOAS_ERR_NO_ROUTER);
  REQUIRE(moas_layer_gates(plain.get(), nullptr, 0, &width) == MOAS_OK);
  REQUIRE(width == 0);
}

TEST_CASE("layer API: bad configs are refused with the field to fix", "[api][layer][errors]") {
  moas_layer *l = nullptr;
  auto refused = [&](const moas_layer_config &c, moas_status expected, const char *mentions) {
    REQUIRE(moas_layer_create(&c, &l) == expected);
    REQUIRE(l == nullptr);
    INFO(moas_last_error());
    REQUIRE(std::string(moas_last_error()).find(mentions) != std::string::npos);
  };
  moas_layer_config c = layer_config();
  c.n_kv_head = 3;
  refused(c, MOAS_ERR_INVALID_CONFIG, "n_kv_head");
  c = layer_config();
  c.n_embd = 30;
  refused(c, MOAS_ERR_INVALID_CONFIG, "n_embd");
  c = layer_config();
  c.attention = MOAS_ATTENTION_MOH;
  c.head_selection.strategy = MOAS_HEADS_MIXTURE;
  c.head_selection.num_shared_heads = 1;
  c.head_selection.num_active_routed_heads = 4;
  refused(c, MOAS_ERR_INVALID_CONFIG, "num_active_routed_heads");
  c = layer_config();
  c.max_seq_len = 0;
  refused(c, MOAS_ERR_INVALID_CONFIG, "max_seq_len");
  c = layer_config();
  c.residual = 2;
  refused(c, MOAS_ERR_INVALID_CONFIG, "residual");
  c = layer_config();
  c.device = MOAS_DEVICE_CUDA;
  refused(c, MOAS_ERR_DEVICE_UNAVAILABLE, "CUDA");
  c = layer_config();
  c.abi_version = 99;
  refused(c, MOAS_ERR_ABI_MISMATCH, "abi_version");
  c = layer_config();
  c.struct_size = 16;
  refused(c, MOAS_ERR_ABI_MISMATCH, "struct_size");
  c = layer_config();
  c.matmul_precision = 3;
  refused(c, MOAS_ERR_INVALID_CONFIG, "matmul_precision");
  c = layer_config();
  c.reserved0 = 1;
  refused(c, MOAS_ERR_INVALID_CONFIG, "reserved0");
  // Settings the layer would ignore are refused, naming the setting that would give them a meaning.
  c = layer_config();
  c.window_size = c.max_seq_len;
  refused(c, MOAS_ERR_INVALID_CONFIG, "window_size");
  c = layer_config();
  c.rope_base = 500000.0f;
  refused(c, MOAS_ERR_INVALID_CONFIG, "MOAS_POSITION_ROPE");
  c = layer_config();
  c.cope_max_pos = 16;
  refused(c, MOAS_ERR_INVALID_CONFIG, "MOAS_POSITION_COPE");
  c = layer_config();
  c.moas_mode = MOAS_MODE_TOP1;
  refused(c, MOAS_ERR_INVALID_CONFIG, "MOAS_ATTENTION_MOAS");
  c = layer_config();
  c.moas_branch_kv_heads[1] = 1;
  refused(c, MOAS_ERR_INVALID_CONFIG, "MOAS_ATTENTION_MOAS");
  c = layer_config();
  c.head_selection.strategy = MOAS_HEADS_STATIC_PRUNING;
  c.head_selection.num_active_heads = 2;
  refused(c, MOAS_ERR_INVALID_CONFIG, "MOAS_ATTENTION_MOH");
  c = layer_config();
  c.device_index = 1;
  refused(c, MOAS_ERR_INVALID_CONFIG, "device_index");
  c = layer_config();
  c.matmul_precision = MOAS_MATMUL_BF16;
  refused(c, MOAS_ERR_INVALID_CONFIG, "MOAS_MATMUL_FP32");
  // ... and accepted where they mean something.
  c = layer_config();
  c.window_size = c.max_seq_len - 1;
  c.position = MOAS_POSITION_ROPE;
  c.rope_base = 500000.0f;
  REQUIRE(moas_layer_create(&c, &l) == MOAS_OK);
  moas_layer_destroy(l);
  l = nullptr;
  // A 0.4.0 caller's struct ends before matmul_precision: the bytes beyond (-1 here) are never read.
  unsigned char buffer[sizeof(moas_layer_config)];
  std::memset(buffer, 0xFF, sizeof buffer);
  c = layer_config();
  c.struct_size = offsetof(moas_layer_config, matmul_precision);
  std::memcpy(buffer, &c, c.struct_size);
  REQUIRE(moas_layer_create(reinterpret_cast<const moas_layer_config *>(buffer), &l) == MOAS_OK);
  moas_layer_destroy(l);
  l = nullptr;
  REQUIRE(moas_layer_create(nullptr, &l) == MOAS_ERR_NULL_ARGUMENT);
  moas_layer_destroy(nullptr);
}

TEST_CASE("layer API: bad calls get a status and leave the layer as it was", "[api][layer][errors]") {
  moas_layer_config cfg = layer_config();
  LayerPtr layer = make_layer(cfg);
  moas_layer *l = layer.get();
  const int B = 2, Tn = 6;
  const std::vector<float> x = random_floats((size_t)(B * Tn * cfg.n_embd), 9);
  std::vector<float> y(x.size(), 0.0f), dx(x.size());
  REQUIRE(moas_layer_backward(l, x.data(), dx.data(), dx.size()) == MOAS_ERR_NO_FORWARD);
  const std::vector<float> reference = forward(l, x, B, Tn, 1);

  REQUIRE(moas_layer_forward(l, nullptr, y.data(), x.size(), B, Tn, 0, nullptr) == MOAS_ERR_NULL_ARGUMENT);
  REQUIRE(moas_layer_forward(l, x.data(), nullptr, x.size(), B, Tn, 0, nullptr) == MOAS_ERR_NULL_ARGUMENT);
  REQUIRE(moas_layer_forward(nullptr, x.data(), y.data(), x.size(), B, Tn, 0, nullptr) == MOAS_ERR_NULL_ARGUMENT);
  REQUIRE(moas_layer_forward(l, x.data(), y.data(), x.size() - 1, B, Tn, 0, nullptr) == MOAS_ERR_SIZE_MISMATCH);
  REQUIRE(std::string(moas_last_error()).find("n_embd") != std::string::npos);
  REQUIRE(moas_layer_forward(l, x.data(), y.data(), x.size(), B, 0, 0, nullptr) == MOAS_ERR_SIZE_MISMATCH);
  std::vector<float> long_x((size_t)(17 * cfg.n_embd));
  REQUIRE(moas_layer_forward(l, long_x.data(), long_x.data(), long_x.size(), 1, 17, 0, nullptr) ==
          MOAS_ERR_CONTEXT_TOO_LONG);
  REQUIRE(moas_layer_forward(l, x.data(), y.data(), x.size(), B, Tn, 2, nullptr) == MOAS_ERR_INVALID_CONFIG);
  std::vector<float> shifted(x.size() + 5);
  REQUIRE(moas_layer_forward(l, shifted.data(), shifted.data() + 5, x.size(), B, Tn, 0, nullptr) ==
          MOAS_ERR_INVALID_ARGUMENT);
  std::vector<float> bad = x;
  bad[17] = std::nanf("");
  REQUIRE(moas_layer_forward(l, bad.data(), y.data(), x.size(), B, Tn, 1, nullptr) == MOAS_ERR_NON_FINITE);
  bad[17] = INFINITY;
  REQUIRE(moas_layer_forward(l, bad.data(), y.data(), x.size(), B, Tn, 1, nullptr) == MOAS_ERR_NON_FINITE);
  REQUIRE(std::all_of(y.begin(), y.end(), [](float v) { return v == 0.0f; }));

  // The training forward before the refused calls is still the one backward sees.
  std::vector<float> dy = random_floats(x.size(), 10);
  REQUIRE(moas_layer_backward(l, dy.data(), dx.data(), dx.size() + 1) == MOAS_ERR_SIZE_MISMATCH);
  dy[3] = std::nanf("");
  REQUIRE(moas_layer_backward(l, dy.data(), dx.data(), dx.size()) == MOAS_ERR_NON_FINITE);
  dy[3] = 0.5f;
  REQUIRE(moas_layer_backward(l, dy.data(), dx.data(), dx.size()) == MOAS_OK);
  REQUIRE(moas_layer_backward(l, dy.data(), dx.data(), dx.size()) == MOAS_ERR_NO_FORWARD);

  const float nan = std::nanf("");
  std::vector<float> w((size_t)(cfg.n_embd * cfg.n_embd), nan);
  REQUIRE(moas_layer_parameter_write(l, "attn.c_proj.weight", w.data(), w.size()) == MOAS_ERR_NON_FINITE);
  REQUIRE(moas_layer_parameter_write(l, "attn.nope", w.data(), w.size()) == MOAS_ERR_UNKNOWN_PARAMETER);
  REQUIRE(moas_layer_parameter_read(l, "attn.c_proj.weight", w.data(), w.size() - 1) == MOAS_ERR_SIZE_MISMATCH);
  REQUIRE(moas_layer_gradient_write(l, "attn.c_proj.weight", w.data(), w.size()) == MOAS_ERR_NON_FINITE);
  size_t count = 0;
  REQUIRE(moas_layer_parameter_count(l, &count) == MOAS_OK);
  moas_parameter_info info;
  info.struct_size = sizeof info;
  REQUIRE(moas_layer_parameter_info_at(l, count, &info) == MOAS_ERR_INDEX_OUT_OF_RANGE);
  REQUIRE(forward(l, x, B, Tn) == reference);
}

TEST_CASE("layer API: gradients written by the caller are what the optimiser applies", "[api][layer]") {
  moas_layer_config cfg = layer_config();
  LayerPtr l = make_layer(cfg);
  const size_t numel = (size_t)(cfg.n_embd * cfg.n_embd);
  std::vector<float> before(numel), after(numel), grad(numel, 0.0f);
  REQUIRE(moas_layer_parameter_read(l.get(), "attn.c_proj.weight", before.data(), numel) == MOAS_OK);
  grad[5] = 1.0f;
  REQUIRE(moas_layer_gradient_write(l.get(), "attn.c_proj.weight", grad.data(), numel) == MOAS_OK);
  moas_adamw_config adam;
  adam.struct_size = sizeof adam;
  REQUIRE(moas_adamw_config_default(&adam) == MOAS_OK);
  adam.weight_decay = 0.0f;
  adam.lr = 0.1f;
  REQUIRE(moas_layer_optimizer_step(l.get(), &adam, nullptr) == MOAS_OK);
  REQUIRE(moas_layer_parameter_read(l.get(), "attn.c_proj.weight", after.data(), numel) == MOAS_OK);
  for (size_t i = 0; i < numel; i++) REQUIRE(after[i] == (i == 5 ? Approx(before[i] - 0.1f) : Approx(before[i])));
}
