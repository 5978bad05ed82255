// The attention layer on caller buffers, in double: finite differences of dx and of every parameter through the
// whole layer (residual, routers and their load-balance loss included), for each attention kind.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "config/layer_config.hpp"
#include "gradcheck.hpp"
#include "model/layer.hpp"

namespace {

using moas_test::check_gradient;
using moas_test::random_vector;

moas_layer_config tiny_layer() {
  moas_layer_config c;
  c.struct_size = sizeof c;
  moas::fill_layer_default(&c);
  c.n_embd = 24;
  c.n_head = 6;
  c.n_kv_head = 3;
  c.max_seq_len = 9;
  c.n_threads = 2;
  return c;
}

// loss = sum(w * y) + lambda * aux, the objective whose gradient moas_layer_backward computes for dy = w.
double objective(moas::AttentionLayer<double> &layer, const std::vector<double> &x, const std::vector<double> &w,
                 int64_t B, int64_t Tn, std::vector<double> &y) {
  layer.forward(x.data(), y.data(), B, Tn, true);
  return moas_test::dot(w, y) + layer.config().aux_weight() * layer.aux_loss();
}

void check_layer(const moas_layer_config &cfg) {
  moas::AttentionLayer<double> layer(moas::validate_layer(cfg), cfg.residual == 1);
  // Random weights everywhere (CoPE embeddings and routers start at zero or small otherwise).
  for (size_t i = 0; i < layer.params.values.size(); i++) layer.params.values[i] = 0.3 * moas::normal_sample(5, 1, i);
  const int64_t B = 2, Tn = 7, n = B * Tn * cfg.n_embd;
  std::vector<double> x = random_vector((size_t)n, 11), w = random_vector((size_t)n, 12), y((size_t)n);
  objective(layer, x, w, B, Tn, y);
  std::vector<double> dx((size_t)n);
  std::fill(layer.params.grads.begin(), layer.params.grads.end(), 0.0);
  layer.backward(w.data(), dx.data());
  const std::vector<double> grads = layer.params.grads;
  auto loss = [&] { return objective(layer, x, w, B, Tn, y); };
  check_gradient("dx", x.data(), x.size(), dx.data(), loss);
  for (const moas::ParamInfo &info : layer.params.infos())
    check_gradient(info.name, layer.params.values.data() + info.offset, (size_t)info.numel,
                   grads.data() + info.offset, loss, 24);
}

}  // namespace

TEST_CASE("layer: dx and every parameter gradient match finite differences", "[layer][gradcheck]") {
  moas_layer_config c = tiny_layer();
  SECTION("GQA, RoPE, residual inside") {
    c.position = MOAS_POSITION_ROPE;
    check_layer(c);
  }
  SECTION("MHA without residual, with biases") {
    c.n_kv_head = 6;
    c.residual = 0;
    c.bias = 1;
    check_layer(c);
  }
  SECTION("MoAS soft with its load-balance loss") {
    c.attention = MOAS_ATTENTION_MOAS;
    c.moas_branch_kv_heads[1] = 3;
    c.moas_aux_weight = 0.5f;
    check_layer(c);
  }
  SECTION("MoAS top-1") {
    c.attention = MOAS_ATTENTION_MOAS;
    c.moas_mode = MOAS_MODE_TOP1;
    c.moas_branch_kv_heads[1] = 3;
    check_layer(c);
  }
  SECTION("MoH: 2 shared + 2 of 4 routed heads, GQA, load-balance loss") {
    c.attention = MOAS_ATTENTION_MOH;
    c.head_selection.strategy = MOAS_HEADS_MIXTURE;
    c.head_selection.num_shared_heads = 2;
    c.head_selection.num_active_routed_heads = 2;
    c.head_selection.load_balance_weight = 0.5f;
    check_layer(c);
  }
  SECTION("GQA + MoH + window + CoPE together") {
    c.attention = MOAS_ATTENTION_MOH;
    c.head_selection.strategy = MOAS_HEADS_MIXTURE;
    c.head_selection.num_shared_heads = 1;
    c.head_selection.num_active_routed_heads = 3;
    c.head_selection.load_balance_weight = 0.5f;
    c.position = MOAS_POSITION_COPE;
    c.cope_max_pos = 5;
    c.window_size = 3;
    check_layer(c);
  }
  SECTION("MoH StaticPruning: 4 of 6 heads") {
    c.attention = MOAS_ATTENTION_MOH;
    c.head_selection.strategy = MOAS_HEADS_STATIC_PRUNING;
    c.head_selection.num_active_heads = 4;
    check_layer(c);
  }
}

TEST_CASE("layer: the residual adds exactly x forward and dy backward", "[layer]") {
  moas_layer_config c = tiny_layer();
  moas::AttentionLayer<double> with(moas::validate_layer(c), true), without(moas::validate_layer(c), false);
  const int64_t B = 1, Tn = 5, n = B * Tn * c.n_embd;
  const std::vector<double> x = random_vector((size_t)n, 3), dy = random_vector((size_t)n, 4);
  std::vector<double> y1((size_t)n), y0((size_t)n), dx1((size_t)n), dx0((size_t)n);
  with.forward(x.data(), y1.data(), B, Tn, true);
  without.forward(x.data(), y0.data(), B, Tn, true);
  with.backward(dy.data(), dx1.data());
  without.backward(dy.data(), dx0.data());
  for (int64_t i = 0; i < n; i++) {
    REQUIRE(y1[(size_t)i] == Approx(y0[(size_t)i] + x[(size_t)i]).epsilon(1e-14).margin(1e-15));
    REQUIRE(dx1[(size_t)i] == Approx(dx0[(size_t)i] + dy[(size_t)i]).epsilon(1e-14).margin(1e-15));
  }
  REQUIRE(with.params.grads == without.params.grads);
}
