// The attention layer on the CUDA device (src/cuda_host/cuda_layer.cpp) over the table of CPU functions (cpu_backend_table.hpp):
// forward, backward and AdamW steps must reproduce AttentionLayer<float> bit for bit for every attention kind —
// outputs, dx, every parameter gradient, weights, the load-balance loss, router statistics and gates.
#include <catch2/catch.hpp>

#include <vector>

#include "config/layer_config.hpp"
#include "cpu_backend_table.hpp"
#include "cuda_host/cuda_layer.hpp"
#include "model/model_fixtures.hpp"

using namespace moas;

namespace {

moas_layer_config base_layer() {
  moas_layer_config c;
  c.struct_size = sizeof c;
  fill_layer_default(&c);
  c.n_embd = 24;
  c.n_head = 6;
  c.n_kv_head = 3;
  c.max_seq_len = 9;
  c.n_threads = 2;
  c.dropout = 0.1f;
  return c;
}

std::vector<float> inputs(int64_t n, uint64_t seed) {
  std::vector<float> x((size_t)n);
  init_normal(x.data(), n, 1.0, seed, 1);
  return x;
}

}  // namespace

TEST_CASE("CUDA layer on the CPU table equals AttentionLayer<float> bit for bit", "[cuda][layer]") {
  moas_layer_config c = base_layer();
  SECTION("GQA, RoPE, residual") { c.position = MOAS_POSITION_ROPE; }
  SECTION("MHA without residual, biases") {
    c.n_kv_head = 6;
    c.residual = 0;
    c.bias = 1;
  }
  SECTION("MoAS top-1") {
    c.attention = MOAS_ATTENTION_MOAS;
    c.moas_mode = MOAS_MODE_TOP1;
    c.moas_branch_kv_heads[1] = 3;
  }
  SECTION("MoH 1 shared + 3 of 5, CoPE, window 3 (RustGPT's combination)") {
    c.attention = MOAS_ATTENTION_MOH;
    c.head_selection.strategy = MOAS_HEADS_MIXTURE;
    c.head_selection.num_shared_heads = 1;
    c.head_selection.num_active_routed_heads = 3;
    c.position = MOAS_POSITION_COPE;
    c.cope_max_pos = 5;
    c.window_size = 3;
  }
  SECTION("MoH StaticPruning 4 of 6") {
    c.attention = MOAS_ATTENTION_MOH;
    c.head_selection.strategy = MOAS_HEADS_STATIC_PRUNING;
    c.head_selection.num_active_heads = 4;
  }
  const ModelConfig config = validate_layer(c);
  AttentionLayer<float> cpu(config, c.residual == 1), mirror(config, c.residual == 1);
  CudaLayer device(*moas_test::cpu_backend_table(), 0, mirror);
  const AdamWSettings adamw{3e-3, 0.9, 0.95, 1e-8, 0.0, 1.0};
  const int64_t B = 2, Tn = 9, n = B * Tn * c.n_embd;
  for (int step = 0; step < 3; step++) {
    INFO("step " << step);
    const std::vector<float> x = inputs(n, 10 + (uint64_t)step), dy = inputs(n, 20 + (uint64_t)step);
    std::vector<float> y_cpu((size_t)n), y_device((size_t)n), dx_cpu((size_t)n), dx_device((size_t)n);
    cpu.forward(x.data(), y_cpu.data(), B, Tn, true);
    device.forward(x.data(), y_device.data(), B, Tn, true);
    REQUIRE(y_device == y_cpu);
    REQUIRE(device.aux_loss() == cpu.aux_loss());
    int64_t w_cpu = 0, w_device = 0;
    REQUIRE(device.gates(&w_device) == cpu.gates(&w_cpu));
    REQUIRE(w_device == w_cpu);
    RouterStats s_cpu, s_device;
    REQUIRE(device.router_stats(&s_device) == cpu.router_stats(&s_cpu));
    REQUIRE(s_device.share == s_cpu.share);
    REQUIRE(s_device.entropy == s_cpu.entropy);

    cpu.backward(dy.data(), dx_cpu.data());
    device.backward(dy.data(), dx_device.data());
    REQUIRE(dx_device == dx_cpu);
    device.download_grads();
    REQUIRE(mirror.params.grads == cpu.params.grads);

    const double norm = gradient_norm(cpu.params.grads);
    REQUIRE(device.parameters().gradient_norm() == norm);
    adamw_step(cpu.params, cpu.optimizer, adamw, norm);
    device.parameters().adamw_step(adamw, cpu.optimizer.step, norm);
    std::fill(cpu.params.grads.begin(), cpu.params.grads.end(), 0.0f);
    device.parameters().zero_grads();
  }
  device.download_values();
  REQUIRE(mirror.params.values == cpu.params.values);

  // In place (y == x) and an eval forward.
  std::vector<float> a = inputs(n, 99), b = a;
  cpu.forward(a.data(), a.data(), B, Tn, false);
  device.forward(b.data(), b.data(), B, Tn, false);
  REQUIRE(a == b);
}
