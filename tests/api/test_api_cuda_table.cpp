// device = MOAS_DEVICE_CUDA end to end through the public ABI, where no GPU exists: MOAS_CUDA_LIBRARY points at
// libmoas_cuda_cpu.so, the backend table filled with the CPU functions (cpu_backend_table.hpp), so the library loads
// it as it would load libmoas_cuda.so and runs the CUDA model (cuda_model.hpp) over it. A model on that "device"
// must then train, save, load and report exactly like the same model on the CPU; what the CUDA model does not run
// yet is refused with a message.
#include <catch2/catch.hpp>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "api_helpers.hpp"

using Catch::Matchers::Contains;

namespace {

// Before main, so before libmoas first looks for its CUDA backend (once per process).
const bool table_chosen = setenv("MOAS_CUDA_LIBRARY", MOAS_TEST_CPU_TABLE, 1) == 0;

moas_model_config cuda_config() {
  REQUIRE(table_chosen);
  moas_model_config c = api_test::small_config();
  c.device = MOAS_DEVICE_CUDA;
  c.position = MOAS_POSITION_ROPE;
  c.window_size = 5;
  c.dropout = 0.1f;
  return c;
}

moas_model_config cpu_twin(moas_model_config c) {
  c.device = MOAS_DEVICE_CPU;
  return c;
}

moas_adamw_config adamw_config() {
  moas_adamw_config a;
  a.struct_size = sizeof a;
  REQUIRE(moas_adamw_config_default(&a) == MOAS_OK);
  a.lr = 3e-3f;
  return a;
}

// One training step; returns (loss, gradient norm).
std::pair<float, float> train_step(moas_model *m, const std::vector<int32_t> &tokens,
                                   const std::vector<int32_t> &targets, int B, int Tn) {
  const moas_adamw_config adamw = adamw_config();
  float loss = 0, norm = 0;
  REQUIRE(moas_zero_grad(m) == MOAS_OK);
  REQUIRE(moas_forward(m, tokens.data(), targets.data(), B, Tn, 1, &loss, nullptr) == MOAS_OK);
  REQUIRE(moas_backward(m) == MOAS_OK);
  REQUIRE(moas_optimizer_step(m, &adamw, &norm) == MOAS_OK);
  return {loss, norm};
}

// Every layer's router statistics of the last forward, the same on both models.
void require_same_router_stats(const moas_model *device, const moas_model *cpu, int32_t n_layer) {
  for (int32_t layer = 0; layer < n_layer; layer++) {
    moas_layer_router_stats on_device, on_cpu;
    on_device.struct_size = on_cpu.struct_size = sizeof on_device;
    REQUIRE(moas_router_stats(device, layer, &on_device) == MOAS_OK);
    REQUIRE(moas_router_stats(cpu, layer, &on_cpu) == MOAS_OK);
    REQUIRE(on_device.aux_loss == on_cpu.aux_loss);
    REQUIRE(on_device.entropy == on_cpu.entropy);
    REQUIRE(on_device.balance == on_cpu.balance);
  }
}

}  // namespace

TEST_CASE("CUDA device (CPU table): training through the ABI equals the CPU model exactly", "[api][cuda]") {
  const moas_model_config c = cuda_config();
  api_test::ModelPtr device = api_test::make_model(c), cpu = api_test::make_model(cpu_twin(c));
  const int B = 3, Tn = 12;
  for (uint32_t step = 0; step < 3; step++) {
    const auto tokens = api_test::sequence(B * Tn, c.vocab_size, 10 + step);
    const auto targets = api_test::sequence(B * Tn, c.vocab_size, 20 + step);
    REQUIRE(train_step(device.get(), tokens, targets, B, Tn) == train_step(cpu.get(), tokens, targets, B, Tn));
    const size_t n = (size_t)(B * Tn * c.vocab_size);
    REQUIRE(api_test::logits_of(device.get(), n) == api_test::logits_of(cpu.get(), n));
  }
  REQUIRE(api_test::all_params(device.get()) == api_test::all_params(cpu.get()));
  uint64_t steps = 0;
  REQUIRE(moas_optimizer_steps(device.get(), &steps) == MOAS_OK);
  REQUIRE(steps == 3);

  // Gradients read back, after one more forward and backward.
  const auto tokens = api_test::sequence(B * Tn, c.vocab_size, 99);
  for (moas_model *m : {device.get(), cpu.get()}) {
    REQUIRE(moas_zero_grad(m) == MOAS_OK);
    REQUIRE(moas_forward(m, tokens.data(), tokens.data(), B, Tn, 1, nullptr, nullptr) == MOAS_OK);
    REQUIRE(moas_backward(m) == MOAS_OK);
  }
  for (const std::string &name : api_test::parameter_names(cpu.get())) {
    const std::vector<float> w = api_test::read_param(cpu.get(), name.c_str());
    std::vector<float> g_device(w.size()), g_cpu(w.size());
    REQUIRE(moas_gradient_read(device.get(), name.c_str(), g_device.data(), w.size()) == MOAS_OK);
    REQUIRE(moas_gradient_read(cpu.get(), name.c_str(), g_cpu.data(), w.size()) == MOAS_OK);
    INFO(name);
    REQUIRE(g_device == g_cpu);
  }
}

TEST_CASE("CUDA device (CPU table): MoAS top-1 trains through the ABI exactly as on the CPU, aux loss and router "
          "stats included",
          "[api][cuda]") {
  moas_model_config c = cuda_config();  // RoPE, window 5, dropout 0.1 (the gates' too)
  c.attention = MOAS_ATTENTION_MOAS;
  c.n_kv_head = c.n_head;  // MoAS branches take theirs from moas_branch_kv_heads
  c.moas_mode = MOAS_MODE_TOP1;
  c.moas_n_branches = 3;
  const int32_t branch_kv_heads[] = {4, 2, 1};
  std::copy(branch_kv_heads, branch_kv_heads + 3, c.moas_branch_kv_heads);
  api_test::ModelPtr device = api_test::make_model(c), cpu = api_test::make_model(cpu_twin(c));
  const moas_adamw_config adamw = adamw_config();
  const int B = 3, Tn = 12;
  for (uint32_t step = 0; step < 3; step++) {
    const auto tokens = api_test::sequence(B * Tn, c.vocab_size, 50 + step);
    const auto targets = api_test::sequence(B * Tn, c.vocab_size, 60 + step);
    float loss[2] = {0, 0}, aux[2] = {-1, -1}, norm[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
      moas_model *m = i == 0 ? device.get() : cpu.get();
      REQUIRE(moas_zero_grad(m) == MOAS_OK);
      REQUIRE(moas_forward(m, tokens.data(), targets.data(), B, Tn, 1, &loss[i], &aux[i]) == MOAS_OK);
      REQUIRE(moas_backward(m) == MOAS_OK);
      REQUIRE(moas_optimizer_step(m, &adamw, &norm[i]) == MOAS_OK);
    }
    REQUIRE(loss[0] == loss[1]);
    REQUIRE(aux[0] == aux[1]);
    REQUIRE(aux[1] > 0.0f);  // routed gates are never exactly balanced
    REQUIRE(norm[0] == norm[1]);
    require_same_router_stats(device.get(), cpu.get(), c.n_layer);
  }
  REQUIRE(api_test::all_params(device.get()) == api_test::all_params(cpu.get()));
}

TEST_CASE("CUDA device (CPU table): MoH trains through the ABI exactly as on the CPU", "[api][cuda]") {
  moas_model_config c = cuda_config();  // RoPE, window 5, dropout 0.1
  c.attention = MOAS_ATTENTION_MOH;
  c.head_selection.strategy = MOAS_HEADS_MIXTURE;
  c.head_selection.num_shared_heads = 1;
  c.head_selection.num_active_routed_heads = 2;
  api_test::ModelPtr device = api_test::make_model(c), cpu = api_test::make_model(cpu_twin(c));
  const int B = 3, Tn = 12;
  for (uint32_t step = 0; step < 3; step++) {
    const auto tokens = api_test::sequence(B * Tn, c.vocab_size, 30 + step);
    const auto targets = api_test::sequence(B * Tn, c.vocab_size, 40 + step);
    REQUIRE(train_step(device.get(), tokens, targets, B, Tn) == train_step(cpu.get(), tokens, targets, B, Tn));
    require_same_router_stats(device.get(), cpu.get(), c.n_layer);
  }
  REQUIRE(api_test::all_params(device.get()) == api_test::all_params(cpu.get()));
}

TEST_CASE("CUDA device (CPU table): written weights, checkpoints and optimiser state move between devices",
          "[api][cuda]") {
  const moas_model_config c = cuda_config();
  api_test::ModelPtr device = api_test::make_model(c), cpu = api_test::make_model(cpu_twin(c));
  const int B = 2, Tn = 10;
  const auto tokens = api_test::sequence(B * Tn, c.vocab_size, 3);
  train_step(device.get(), tokens, tokens, B, Tn);

  // A write reaches the device (the forward changes) and a read sees it.
  std::vector<float> ln = api_test::read_param(device.get(), "transformer.ln_f.weight");
  for (float &v : ln) v *= 1.5f;
  float before = 0, after = 0;
  REQUIRE(moas_forward(device.get(), tokens.data(), tokens.data(), B, Tn, 0, &before, nullptr) == MOAS_OK);
  REQUIRE(moas_parameter_write(device.get(), "transformer.ln_f.weight", ln.data(), ln.size()) == MOAS_OK);
  REQUIRE(api_test::read_param(device.get(), "transformer.ln_f.weight") == ln);
  REQUIRE(moas_forward(device.get(), tokens.data(), tokens.data(), B, Tn, 0, &after, nullptr) == MOAS_OK);
  REQUIRE(after != before);

  // Device -> file -> CPU, weights and optimiser state; then one more step on each agrees.
  api_test::TempDir dir;
  REQUIRE(moas_model_save(device.get(), dir.file("m.safetensors").c_str(), nullptr) == MOAS_OK);
  REQUIRE(moas_optimizer_save(device.get(), dir.file("opt.safetensors").c_str()) == MOAS_OK);
  REQUIRE(moas_model_load(cpu.get(), dir.file("m.safetensors").c_str()) == MOAS_OK);
  REQUIRE(moas_optimizer_load(cpu.get(), dir.file("opt.safetensors").c_str()) == MOAS_OK);
  REQUIRE(api_test::all_params(cpu.get()) == api_test::all_params(device.get()));
  const auto more = api_test::sequence(B * Tn, c.vocab_size, 4);
  REQUIRE(train_step(device.get(), more, more, B, Tn) == train_step(cpu.get(), more, more, B, Tn));

  // File -> device, by load and by create_from_file with a device override.
  REQUIRE(moas_model_save(cpu.get(), dir.file("m2.safetensors").c_str(), nullptr) == MOAS_OK);
  api_test::ModelPtr fresh = api_test::make_model(c);
  REQUIRE(moas_model_load(fresh.get(), dir.file("m2.safetensors").c_str()) == MOAS_OK);
  moas_model *created = nullptr;
  REQUIRE(moas_model_create_from_file(dir.file("m2.safetensors").c_str(), &c, &created) == MOAS_OK);
  api_test::ModelPtr from_file(created);
  float l_cpu = 0, l_fresh = 0, l_created = 0;
  REQUIRE(moas_forward(cpu.get(), tokens.data(), tokens.data(), B, Tn, 0, &l_cpu, nullptr) == MOAS_OK);
  REQUIRE(moas_forward(fresh.get(), tokens.data(), tokens.data(), B, Tn, 0, &l_fresh, nullptr) == MOAS_OK);
  REQUIRE(moas_forward(from_file.get(), tokens.data(), tokens.data(), B, Tn, 0, &l_created, nullptr) == MOAS_OK);
  REQUIRE(l_fresh == l_cpu);
  REQUIRE(l_created == l_cpu);
}

namespace {

// The CPU model reads a decode step's weights (up to 8 tokens) from a packed copy whose dot products sum in another
// order than the table's gemm: its logits and the device's agree to float rounding, not bit for bit.
bool same_to_rounding(const std::vector<float> &got, const std::vector<float> &want) {
  float scale = 0, diff = 0;
  for (size_t i = 0; i < want.size(); i++) {
    scale = std::max(scale, std::fabs(want[i]));
    diff = std::max(diff, std::fabs(got[i] - want[i]));
  }
  return got.size() == want.size() && diff <= 1e-6f * scale;
}

}  // namespace

TEST_CASE("CUDA device (CPU table): decoding through the ABI equals the CPU model's", "[api][cuda][decode]") {
  moas_model_config scheme = cuda_config();  // RoPE, window 5: the ring buffer wraps within block_size 16
  scheme.dropout = 0.0f;
  moas_model_config moas_top1 = scheme;
  moas_top1.attention = MOAS_ATTENTION_MOAS;
  moas_top1.n_kv_head = moas_top1.n_head;
  moas_top1.moas_mode = MOAS_MODE_TOP1;
  moas_top1.moas_n_branches = 3;
  const int32_t branch_kv_heads[] = {4, 2, 1};
  std::copy(branch_kv_heads, branch_kv_heads + 3, moas_top1.moas_branch_kv_heads);
  moas_model_config moh = scheme;
  moh.attention = MOAS_ATTENTION_MOH;
  moh.head_selection.strategy = MOAS_HEADS_MIXTURE;
  moh.head_selection.num_shared_heads = 1;
  moh.head_selection.num_active_routed_heads = 2;
  for (const moas_model_config &c : {scheme, moas_top1, moh}) {
    DYNAMIC_SECTION("attention " << c.attention) {
      api_test::ModelPtr device = api_test::make_model(c), cpu = api_test::make_model(cpu_twin(c));
      const int B = 2, prompt = 4, V = c.vocab_size;
      const auto tokens = api_test::sequence(B * c.block_size, V, 7);
      moas_kv_cache *on_device = nullptr, *on_host = nullptr;
      REQUIRE(moas_kv_cache_create(device.get(), B, c.block_size, &on_device) == MOAS_OK);
      REQUIRE(moas_kv_cache_create(cpu.get(), B, c.block_size, &on_host) == MOAS_OK);
      uint64_t bytes[2] = {0, 1};
      REQUIRE(moas_kv_cache_bytes_per_token(on_device, &bytes[0]) == MOAS_OK);
      REQUIRE(moas_kv_cache_bytes_per_token(on_host, &bytes[1]) == MOAS_OK);
      REQUIRE(bytes[0] == bytes[1]);

      // Two rounds: the second after a reset, which must decode as a fresh cache.
      for (int round = 0; round < 2; round++) {
        std::vector<float> got((size_t)(B * V)), want((size_t)(B * V));
        REQUIRE(moas_prefill(device.get(), on_device, tokens.data(), prompt, got.data(), got.size()) == MOAS_OK);
        REQUIRE(moas_prefill(cpu.get(), on_host, tokens.data(), prompt, want.data(), want.size()) == MOAS_OK);
        REQUIRE(same_to_rounding(got, want));
        const size_t all = (size_t)(B * prompt * V);
        REQUIRE(same_to_rounding(api_test::logits_of(device.get(), all), api_test::logits_of(cpu.get(), all)));
        for (int t = prompt; t < c.block_size; t++) {
          INFO("position " << t);
          const std::vector<int32_t> step = {tokens[(size_t)t], tokens[(size_t)(c.block_size + t)]};
          REQUIRE(moas_decode_step(device.get(), on_device, step.data(), got.data(), got.size()) == MOAS_OK);
          REQUIRE(moas_decode_step(cpu.get(), on_host, step.data(), want.data(), want.size()) == MOAS_OK);
          REQUIRE(same_to_rounding(got, want));
        }
        int32_t length = 0;
        REQUIRE(moas_kv_cache_length(on_device, &length) == MOAS_OK);
        REQUIRE(length == c.block_size);
        const std::vector<int32_t> more = {1, 2};
        REQUIRE(moas_decode_step(device.get(), on_device, more.data(), got.data(), got.size()) ==
                MOAS_ERR_CONTEXT_FULL);
        REQUIRE(moas_kv_cache_reset(on_device) == MOAS_OK);
        REQUIRE(moas_kv_cache_reset(on_host) == MOAS_OK);
      }
      moas_kv_cache_destroy(on_device);
      moas_kv_cache_destroy(on_host);
    }
  }
}

TEST_CASE("CUDA device (CPU table): a KV cache serves only models on the device it was made for", "[api][cuda]") {
  const moas_model_config c = cuda_config();
  api_test::ModelPtr device = api_test::make_model(c), cpu = api_test::make_model(cpu_twin(c));
  moas_kv_cache *on_device = nullptr, *on_host = nullptr;
  REQUIRE(moas_kv_cache_create(device.get(), 1, 8, &on_device) == MOAS_OK);
  REQUIRE(moas_kv_cache_create(cpu.get(), 1, 8, &on_host) == MOAS_OK);
  const int32_t token = 1;
  REQUIRE(moas_prefill(device.get(), on_host, &token, 1, nullptr, 0) == MOAS_ERR_INVALID_ARGUMENT);
  REQUIRE_THAT(std::string(moas_last_error()),
               Contains("made by a model on MOAS_DEVICE_CPU and this model runs on MOAS_DEVICE_CUDA device 0"));
  REQUIRE(moas_decode_step(cpu.get(), on_device, &token, nullptr, 0) == MOAS_ERR_INVALID_ARGUMENT);
  REQUIRE_THAT(std::string(moas_last_error()), Contains("create the cache from this model"));
  int32_t length = -1;
  for (moas_kv_cache *cache : {on_device, on_host}) {  // refused before anything was appended
    REQUIRE(moas_kv_cache_length(cache, &length) == MOAS_OK);
    REQUIRE(length == 0);
  }
  REQUIRE(moas_prefill(device.get(), on_device, &token, 1, nullptr, 0) == MOAS_OK);
  REQUIRE(moas_prefill(cpu.get(), on_host, &token, 1, nullptr, 0) == MOAS_OK);
  moas_kv_cache_destroy(on_device);
  moas_kv_cache_destroy(on_host);
}

TEST_CASE("CUDA device (CPU table): no router statistics for one scheme, and no device the backend lacks",
          "[api][cuda]") {
  moas_model_config c = cuda_config();
  api_test::ModelPtr device = api_test::make_model(c);
  moas_layer_router_stats stats;
  stats.struct_size = sizeof stats;
  REQUIRE(moas_router_stats(device.get(), 0, &stats) == MOAS_ERR_NO_FORWARD);
  const auto tokens = api_test::sequence(8, c.vocab_size, 1);
  REQUIRE(moas_forward(device.get(), tokens.data(), nullptr, 1, 8, 0, nullptr, nullptr) == MOAS_OK);
  REQUIRE(moas_router_stats(device.get(), 0, &stats) == MOAS_ERR_NO_ROUTER);

  moas_model *m = nullptr;
  moas_model_config indexed = cuda_config();
  indexed.device_index = 1;
  REQUIRE(moas_model_create(&indexed, &m) == MOAS_ERR_DEVICE_UNAVAILABLE);
  REQUIRE_THAT(std::string(moas_last_error()), Contains("device_index is 1 but this machine has 1 CUDA device"));

  moas_layer_config lc;
  lc.struct_size = sizeof lc;
  REQUIRE(moas_layer_config_default(&lc) == MOAS_OK);
  lc.device = MOAS_DEVICE_CUDA;
  lc.device_index = 1;
  moas_layer *layer = nullptr;
  REQUIRE(moas_layer_create(&lc, &layer) == MOAS_ERR_DEVICE_UNAVAILABLE);
  REQUIRE(layer == nullptr);
}

TEST_CASE("CUDA device (CPU table): matmul_precision reaches the device's products, per model, through every entry",
          "[api][cuda][precision]") {
  moas_model_config c = cuda_config();
  c.dropout = 0.0f;
  moas_model_config tf32 = c;
  tf32.matmul_precision = MOAS_MATMUL_TF32;
  api_test::ModelPtr fp32_model = api_test::make_model(c), tf32_model = api_test::make_model(tf32),
                     cpu = api_test::make_model(cpu_twin(tf32));  // the CPU ignores the setting
  const int B = 2, Tn = 10;
  const auto tokens = api_test::sequence(B * Tn, c.vocab_size, 5);
  float l_fp32 = 0, l_tf32 = 0, l_cpu = 0;
  REQUIRE(moas_forward(tf32_model.get(), tokens.data(), tokens.data(), B, Tn, 0, &l_tf32, nullptr) == MOAS_OK);
  REQUIRE(moas_forward(fp32_model.get(), tokens.data(), tokens.data(), B, Tn, 0, &l_fp32, nullptr) == MOAS_OK);
  REQUIRE(moas_forward(cpu.get(), tokens.data(), tokens.data(), B, Tn, 0, &l_cpu, nullptr) == MOAS_OK);
  REQUIRE(l_fp32 == l_cpu);  // the TF32 model's entry just before did not leave its precision behind
  REQUIRE(l_tf32 != l_fp32);
  REQUIRE(l_tf32 == Approx(l_fp32).epsilon(1e-4));

  // A checkpoint does not carry the precision; create_from_file takes it from the overrides.
  api_test::TempDir dir;
  REQUIRE(moas_model_save(tf32_model.get(), dir.file("m.safetensors").c_str(), nullptr) == MOAS_OK);
  moas_model *created = nullptr;
  REQUIRE(moas_model_create_from_file(dir.file("m.safetensors").c_str(), &c, &created) == MOAS_OK);
  api_test::ModelPtr as_fp32(created);
  REQUIRE(moas_model_create_from_file(dir.file("m.safetensors").c_str(), &tf32, &created) == MOAS_OK);
  api_test::ModelPtr as_tf32(created);
  moas_model_config got;
  got.struct_size = sizeof got;
  REQUIRE(moas_model_get_config(as_tf32.get(), &got) == MOAS_OK);
  REQUIRE(got.matmul_precision == MOAS_MATMUL_TF32);
  float l_as_fp32 = 0, l_as_tf32 = 0;
  REQUIRE(moas_forward(as_fp32.get(), tokens.data(), tokens.data(), B, Tn, 0, &l_as_fp32, nullptr) == MOAS_OK);
  REQUIRE(moas_forward(as_tf32.get(), tokens.data(), tokens.data(), B, Tn, 0, &l_as_tf32, nullptr) == MOAS_OK);
  REQUIRE(l_as_fp32 == l_fp32);
  REQUIRE(l_as_tf32 == l_tf32);
}

TEST_CASE("CUDA device (CPU table): a step whose result overflows is undone", "[api][cuda]") {
  const moas_model_config c = cuda_config();
  api_test::ModelPtr device = api_test::make_model(c);
  const auto tokens = api_test::sequence(2 * 8, c.vocab_size, 7);
  REQUIRE(moas_forward(device.get(), tokens.data(), tokens.data(), 2, 8, 1, nullptr, nullptr) == MOAS_OK);
  REQUIRE(moas_backward(device.get()) == MOAS_OK);
  moas_adamw_config adamw = adamw_config();
  adamw.grad_clip = 0;
  REQUIRE(moas_optimizer_step(device.get(), &adamw, nullptr) == MOAS_OK);
  const std::vector<float> before = api_test::all_params(device.get());
  uint64_t n = 0;
  REQUIRE(moas_model_num_parameters(device.get(), &n) == MOAS_OK);
  const std::vector<float> huge((size_t)n, 1e30f);  // finite, but their squares overflow the second moment
  REQUIRE(moas_gradients_write(device.get(), huge.data(), huge.size()) == MOAS_OK);
  REQUIRE(moas_optimizer_step(device.get(), &adamw, nullptr) == MOAS_ERR_NON_FINITE);
  REQUIRE(api_test::all_params(device.get()) == before);
  uint64_t steps = 0;
  REQUIRE(moas_optimizer_steps(device.get(), &steps) == MOAS_OK);
  REQUIRE(steps == 1);
}
