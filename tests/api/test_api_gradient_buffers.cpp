// RustGPT's calls on gradients and its optimiser: all of a model's or a layer's gradients as one buffer out and in
// (so a caller can average them over sequences or threads and apply them with the library's optimiser), Adam by
// RustGPT's name, and a step that skips the norm when nothing needs it but still refuses non-finite gradients.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "api_helpers.hpp"
#include "moas.h"

namespace {

using namespace api_test;

moas_adamw_config rustgpt_adam() {
  moas_adamw_config a;
  a.struct_size = sizeof a;
  REQUIRE(moas_adamw_config_rustgpt(&a) == MOAS_OK);
  return a;
}

std::vector<float> layer_gradients(const moas_layer *l) {
  uint64_t n = 0;
  REQUIRE(moas_layer_num_parameters(l, &n) == MOAS_OK);
  std::vector<float> g((size_t)n);
  REQUIRE(moas_layer_gradients_read(l, g.data(), g.size()) == MOAS_OK);
  return g;
}

// One training forward and backward of x with upstream gradient dy.
void forward_backward(moas_layer *l, const std::vector<float> &x, const std::vector<float> &dy, int B, int Tn) {
  std::vector<float> y(x.size()), dx(x.size());
  REQUIRE(moas_layer_forward(l, x.data(), y.data(), x.size(), B, Tn, 1, nullptr) == MOAS_OK);
  REQUIRE(moas_layer_backward(l, dy.data(), dx.data(), dy.size()) == MOAS_OK);
}

}  // namespace

TEST_CASE("RustGPT's Adam by name, and the AdamW default it is not", "[api][optimizer]") {
  const moas_adamw_config a = rustgpt_adam();
  REQUIRE(a.lr == 1e-3f);
  REQUIRE(a.beta1 == 0.9f);
  REQUIRE(a.beta2 == 0.999f);
  REQUIRE(a.eps == 1e-8f);
  REQUIRE(a.weight_decay == 0.0f);
  REQUIRE(a.grad_clip == 0.0f);
  moas_adamw_config d;
  d.struct_size = sizeof d;
  REQUIRE(moas_adamw_config_default(&d) == MOAS_OK);
  REQUIRE(d.beta2 == 0.99f);
  REQUIRE(d.weight_decay == 0.1f);
  REQUIRE(d.grad_clip == 1.0f);
  REQUIRE(moas_adamw_config_rustgpt(nullptr) == MOAS_ERR_NULL_ARGUMENT);
}

TEST_CASE("a model's gradients as one buffer: the named gradients in order, and what the step applies",
          "[api][gradients]") {
  const moas_model_config cfg = small_config();
  ModelPtr a = make_model(cfg), b = make_model(cfg);
  const auto tokens = sequence(2 * 8, cfg.vocab_size, 3), targets = sequence(2 * 8, cfg.vocab_size, 4);
  REQUIRE(moas_forward(a.get(), tokens.data(), targets.data(), 2, 8, 1, nullptr, nullptr) == MOAS_OK);
  REQUIRE(moas_backward(a.get()) == MOAS_OK);

  uint64_t n = 0;
  REQUIRE(moas_model_num_parameters(a.get(), &n) == MOAS_OK);
  std::vector<float> whole((size_t)n);
  REQUIRE(moas_gradients_read(a.get(), whole.data(), whole.size()) == MOAS_OK);
  std::vector<float> named;
  for (const std::string &name : parameter_names(a.get())) {
    std::vector<float> g(read_param(a.get(), name.c_str()).size());
    REQUIRE(moas_gradient_read(a.get(), name.c_str(), g.data(), g.size()) == MOAS_OK);
    named.insert(named.end(), g.begin(), g.end());
  }
  REQUIRE(named == whole);

  // b never ran a backward: given a's gradients, its step is a's.
  REQUIRE(moas_gradients_write(b.get(), whole.data(), whole.size()) == MOAS_OK);
  const moas_adamw_config adam = rustgpt_adam();
  REQUIRE(moas_optimizer_step(a.get(), &adam, nullptr) == MOAS_OK);
  REQUIRE(moas_optimizer_step(b.get(), &adam, nullptr) == MOAS_OK);
  REQUIRE(all_params(a.get()) == all_params(b.get()));

  SECTION("bad buffers are refused and change nothing") {
    std::vector<float> before((size_t)n), after((size_t)n);
    REQUIRE(moas_gradients_read(b.get(), before.data(), before.size()) == MOAS_OK);
    REQUIRE(moas_gradients_read(b.get(), whole.data(), whole.size() - 1) == MOAS_ERR_SIZE_MISMATCH);
    REQUIRE(std::string(moas_last_error()).find("moas_model_num_parameters") != std::string::npos);
    std::vector<float> bad = before;
    bad[bad.size() / 2] = std::numeric_limits<float>::quiet_NaN();
    REQUIRE(moas_gradients_write(b.get(), bad.data(), bad.size()) == MOAS_ERR_NON_FINITE);
    REQUIRE(moas_gradients_write(b.get(), bad.data(), bad.size() + 1) == MOAS_ERR_SIZE_MISMATCH);
    REQUIRE(moas_gradients_write(b.get(), nullptr, bad.size()) == MOAS_ERR_NULL_ARGUMENT);
    REQUIRE(moas_gradients_read(nullptr, after.data(), after.size()) == MOAS_ERR_NULL_ARGUMENT);
    REQUIRE(moas_gradients_read(b.get(), after.data(), after.size()) == MOAS_OK);
    REQUIRE(after == before);
  }
}

TEST_CASE("a layer's per-sequence gradients, averaged by the caller and applied, equal one batched backward",
          "[api][gradients][layer]") {
  moas_layer_config cfg = layer_config();  // one scheme: no load-balance loss, whose batch mean would not split
  LayerPtr per_sequence = make_layer(cfg), batched = make_layer(cfg);
  const int B = 3, Tn = 10, C = cfg.n_embd;
  const size_t row = (size_t)Tn * C;
  const std::vector<float> x = random_floats(B * row, 5), dy = random_floats(B * row, 6);

  uint64_t n = 0;
  REQUIRE(moas_layer_num_parameters(per_sequence.get(), &n) == MOAS_OK);
  size_t count = 0, numel = 0;
  REQUIRE(moas_layer_parameter_count(per_sequence.get(), &count) == MOAS_OK);
  for (size_t i = 0; i < count; i++) {
    moas_parameter_info info;
    info.struct_size = sizeof info;
    REQUIRE(moas_layer_parameter_info_at(per_sequence.get(), i, &info) == MOAS_OK);
    numel += (size_t)info.numel;
  }
  REQUIRE(n == numel);

  std::vector<float> mean((size_t)n, 0.0f);
  for (int b = 0; b < B; b++) {
    const std::vector<float> xb(x.begin() + b * row, x.begin() + (b + 1) * row);
    const std::vector<float> dyb(dy.begin() + b * row, dy.begin() + (b + 1) * row);
    forward_backward(per_sequence.get(), xb, dyb, 1, Tn);
    const std::vector<float> g = layer_gradients(per_sequence.get());
    for (size_t i = 0; i < g.size(); i++) mean[i] += g[i] / B;
    REQUIRE(moas_layer_zero_grad(per_sequence.get()) == MOAS_OK);
  }
  REQUIRE(moas_layer_gradients_write(per_sequence.get(), mean.data(), mean.size()) == MOAS_OK);

  forward_backward(batched.get(), x, dy, B, Tn);
  std::vector<float> whole = layer_gradients(batched.get());
  double scale = 0, diff = 0;
  for (size_t i = 0; i < whole.size(); i++) {
    whole[i] /= B;
    scale = std::max(scale, (double)std::fabs(whole[i]));
    diff = std::max(diff, (double)std::fabs(whole[i] - mean[i]));
  }
  // The sums run in another order (per sequence, then across them), so they agree to float rounding, not bits.
  INFO("max difference " << diff << " of scale " << scale);
  REQUIRE(diff <= 1e-5 * scale);
  REQUIRE(moas_layer_gradients_write(batched.get(), whole.data(), whole.size()) == MOAS_OK);

  // A large eps keeps Adam's first step smooth in the gradient, so rounding cannot flip it.
  moas_adamw_config adam = rustgpt_adam();
  adam.eps = 1e-2f;
  REQUIRE(moas_layer_optimizer_step(per_sequence.get(), &adam, nullptr) == MOAS_OK);
  REQUIRE(moas_layer_optimizer_step(batched.get(), &adam, nullptr) == MOAS_OK);
  const std::vector<float> wa = layer_weights(per_sequence.get()), wb = layer_weights(batched.get());
  for (size_t i = 0; i < wa.size(); i++) REQUIRE(std::fabs(wa[i] - wb[i]) <= 1e-6f);
}

TEST_CASE("a layer step with clipping off computes no norm, yet refuses non-finite gradients and changes nothing",
          "[api][gradients][layer][errors]") {
  moas_layer_config cfg = layer_config();
  LayerPtr layer = make_layer(cfg);
  const int Tn = 6;
  const size_t n = (size_t)Tn * cfg.n_embd;
  // Finite, but the weight gradients they produce overflow float.
  const std::vector<float> x = random_floats(n, 7, 1e3f), dy = random_floats(n, 8, 3e38f);
  forward_backward(layer.get(), x, dy, 1, Tn);
  const std::vector<float> grads = layer_gradients(layer.get());
  bool overflowed = false;
  for (float g : grads) overflowed = overflowed || !std::isfinite(g);
  REQUIRE(overflowed);

  const std::vector<float> before = layer_weights(layer.get());
  const moas_adamw_config adam = rustgpt_adam();  // grad_clip 0, and no norm asked for
  REQUIRE(moas_layer_optimizer_step(layer.get(), &adam, nullptr) == MOAS_ERR_NON_FINITE);
  REQUIRE(layer_weights(layer.get()) == before);
  uint64_t steps = 1;
  REQUIRE(moas_layer_optimizer_steps(layer.get(), &steps) == MOAS_OK);
  REQUIRE(steps == 0);

  // With finite gradients the same call steps, and asking for the norm still reports it.
  REQUIRE(moas_layer_zero_grad(layer.get()) == MOAS_OK);
  forward_backward(layer.get(), random_floats(n, 9), random_floats(n, 10), 1, Tn);
  double squares = 0;
  for (float g : layer_gradients(layer.get())) squares += (double)g * g;
  float norm = 0;
  REQUIRE(moas_layer_optimizer_step(layer.get(), &adam, &norm) == MOAS_OK);
  REQUIRE(norm == Approx(std::sqrt(squares)).epsilon(1e-5));
  REQUIRE(layer_weights(layer.get()) != before);
}

TEST_CASE("a layer's gradient buffer: wrong sizes and non-finite values are refused without change",
          "[api][gradients][layer][errors]") {
  LayerPtr layer = make_layer(layer_config());
  const std::vector<float> before = layer_gradients(layer.get());
  std::vector<float> bad(before.size(), 1.0f);
  REQUIRE(moas_layer_gradients_write(layer.get(), bad.data(), bad.size() - 1) == MOAS_ERR_SIZE_MISMATCH);
  bad[3] = std::numeric_limits<float>::infinity();
  REQUIRE(moas_layer_gradients_write(layer.get(), bad.data(), bad.size()) == MOAS_ERR_NON_FINITE);
  REQUIRE(moas_layer_gradients_read(layer.get(), bad.data(), bad.size() + 1) == MOAS_ERR_SIZE_MISMATCH);
  REQUIRE(moas_layer_gradients_read(layer.get(), nullptr, bad.size()) == MOAS_ERR_NULL_ARGUMENT);
  uint64_t n = 0;
  REQUIRE(moas_layer_num_parameters(nullptr, &n) == MOAS_ERR_NULL_ARGUMENT);
  REQUIRE(layer_gradients(layer.get()) == before);
}
