// The attention layer with device = MOAS_DEVICE_CUDA through the public ABI, where no GPU exists (the CUDA backend is
// the table of CPU functions, as in test_api_cuda_table.cpp): RustGPT's use — forward, backward, its own optimiser
// or the layer's, parameters and gradients by name — must behave exactly like the same layer on the CPU.
#include <catch2/catch.hpp>
#include <stdlib.h>

#include <memory>
#include <string>
#include <vector>

#include "api_helpers.hpp"

namespace {

using namespace api_test;

const bool table_chosen = setenv("MOAS_CUDA_LIBRARY", MOAS_TEST_CPU_TABLE, 1) == 0;

}  // namespace

TEST_CASE("CUDA layer (CPU table) through the ABI equals the CPU layer exactly", "[api][cuda][layer]") {
  REQUIRE(table_chosen);
  moas_layer_config c;
  c.struct_size = sizeof c;
  REQUIRE(moas_layer_config_default(&c) == MOAS_OK);  // RustGPT's shape: C 128, 8 heads, 4 kv heads
  c.attention = MOAS_ATTENTION_MOH;
  c.head_selection.strategy = MOAS_HEADS_MIXTURE;
  c.head_selection.num_shared_heads = 2;
  c.head_selection.num_active_routed_heads = 4;
  c.position = MOAS_POSITION_COPE;
  c.window_size = 16;
  c.device = MOAS_DEVICE_CUDA;
  LayerPtr device = make_layer(c);
  c.device = MOAS_DEVICE_CPU;
  LayerPtr cpu = make_layer(c);

  moas_adamw_config adamw;
  adamw.struct_size = sizeof adamw;
  REQUIRE(moas_adamw_config_default(&adamw) == MOAS_OK);
  adamw.weight_decay = 0.0f;  // RustGPT's Adam
  const int32_t B = 1, T = 40;
  const size_t n = (size_t)B * T * c.n_embd;
  for (uint32_t step = 0; step < 3; step++) {
    const std::vector<float> x = random_floats(n, 1 + step), dy = random_floats(n, 11 + step);
    std::vector<float> y[2], dx[2];
    float aux[2], norm[2];
    moas_layer *layers[2] = {device.get(), cpu.get()};
    for (int k = 0; k < 2; k++) {
      y[k].resize(n);
      dx[k].resize(n);
      REQUIRE(moas_layer_zero_grad(layers[k]) == MOAS_OK);
      REQUIRE(moas_layer_forward(layers[k], x.data(), y[k].data(), n, B, T, 1, &aux[k]) == MOAS_OK);
      REQUIRE(moas_layer_backward(layers[k], dy.data(), dx[k].data(), n) == MOAS_OK);
    }
    REQUIRE(y[0] == y[1]);
    REQUIRE(dx[0] == dx[1]);
    REQUIRE(aux[0] == aux[1]);
    int32_t width[2];
    std::vector<float> gates[2];
    for (int k = 0; k < 2; k++) {
      REQUIRE(moas_layer_gates(layers[k], nullptr, 0, &width[k]) == MOAS_OK);
      gates[k].resize(n / c.n_embd * (size_t)width[k]);
      REQUIRE(moas_layer_gates(layers[k], gates[k].data(), gates[k].size(), &width[k]) == MOAS_OK);
    }
    REQUIRE(width[0] == 8);
    REQUIRE(gates[0] == gates[1]);
    std::vector<float> g[2];
    for (int k = 0; k < 2; k++) {
      g[k].resize((size_t)c.n_embd * c.n_embd);
      REQUIRE(moas_layer_gradient_read(layers[k], "attn.c_proj.weight", g[k].data(), g[k].size()) == MOAS_OK);
      REQUIRE(moas_layer_optimizer_step(layers[k], &adamw, &norm[k]) == MOAS_OK);
    }
    REQUIRE(g[0] == g[1]);
    REQUIRE(norm[0] == norm[1]);
  }

  // A weight written by name reaches the device; gradients written by name feed its optimiser.
  std::vector<float> proj((size_t)c.n_embd * c.n_embd);
  REQUIRE(moas_layer_parameter_read(device.get(), "attn.c_proj.weight", proj.data(), proj.size()) == MOAS_OK);
  std::vector<float> cpu_proj(proj.size());
  REQUIRE(moas_layer_parameter_read(cpu.get(), "attn.c_proj.weight", cpu_proj.data(), cpu_proj.size()) == MOAS_OK);
  REQUIRE(proj == cpu_proj);
  for (float &v : proj) v *= 0.5f;
  const std::vector<float> grad = random_floats(proj.size(), 77);
  for (moas_layer *l : {device.get(), cpu.get()}) {
    REQUIRE(moas_layer_parameter_write(l, "attn.c_proj.weight", proj.data(), proj.size()) == MOAS_OK);
    REQUIRE(moas_layer_zero_grad(l) == MOAS_OK);
    REQUIRE(moas_layer_gradient_write(l, "attn.c_proj.weight", grad.data(), grad.size()) == MOAS_OK);
    REQUIRE(moas_layer_optimizer_step(l, &adamw, nullptr) == MOAS_OK);
  }
  std::vector<float> after[2];
  moas_layer *layers[2] = {device.get(), cpu.get()};
  for (int k = 0; k < 2; k++) {
    after[k].resize(proj.size());
    REQUIRE(moas_layer_parameter_read(layers[k], "attn.c_proj.weight", after[k].data(), after[k].size()) ==
            MOAS_OK);
  }
  REQUIRE(after[0] == after[1]);
  REQUIRE(after[0] != proj);
}
