// The CUDA model's orchestration (src/cuda_model.cpp) on the table of CPU functions (cpu_backend_table.hpp): with the
// same functions underneath, it must reproduce Model<float> bit for bit — loss, logits, every gradient, AdamW's
// weights and moments over several steps — for every option the CUDA model takes. A step in the wrong order, a
// wrong buffer, stride, offset, dropout site or position would show as a difference here, with no GPU needed.
#include <catch2/catch.hpp>

#include <vector>

#include "cpu_backend_table.hpp"
#include "cuda_model.hpp"
#include "model.hpp"
#include "model_fixtures.hpp"

using namespace moas;

namespace {

std::vector<moas_test::NamedConfig> cuda_configs() {
  std::vector<moas_test::NamedConfig> out = moas_test::option_configs();
  ModelConfig cope = moas_test::tiny_config(4, 2, 16);
  cope.position = PositionKind::Cope;
  cope.cope_max_pos = 5;
  cope.window = 3;
  out.push_back({"GQA 4/2 CoPE P=5, window 3", cope});
  ModelConfig window = moas_test::tiny_config(4, 1, 16);
  window.position = PositionKind::Rope;
  window.window = 2;
  window.dropout = 0.2f;
  out.push_back({"MQA RoPE window 2, dropout 0.2 with attention dropout", window});
  return out;
}

std::vector<float> device_logits(const CudaModel &model, const ModelConfig &c) {
  std::vector<float> out((size_t)(model.last_batch() * model.last_seq() * c.vocab_size));
  model.logits(out.data());
  return out;
}

}  // namespace

TEST_CASE("CUDA model on the CPU table equals Model<float> bit for bit: forwards, backward, AdamW steps",
          "[cuda][model]") {
  const AdamWSettings adamw{3e-3, 0.9, 0.95, 1e-8, 0.1, 1.0};
  for (const auto &[name, config] : cuda_configs()) {
    DYNAMIC_SECTION(name) {
      Model<float> cpu(config), mirror(config);
      CudaModel device(*moas_test::cpu_backend_table(), 0, mirror);
      const int64_t B = 2, Tn = config.block_size;
      const auto tokens = moas_test::tokens_for(B * Tn, config.vocab_size, 5);
      auto targets = moas_test::tokens_for(B * Tn, config.vocab_size, 6);
      targets[3] = -1;  // an ignored position

      for (int step = 0; step < 3; step++) {
        INFO("step " << step);
        const double loss = cpu.forward(tokens.data(), targets.data(), B, Tn, true);
        REQUIRE(device.forward(tokens.data(), targets.data(), B, Tn, true) == loss);
        REQUIRE(mirror.training_forwards == cpu.training_forwards);
        REQUIRE(device_logits(device, config) == cpu.logits());
        REQUIRE(device.can_backward());
        cpu.backward();
        device.backward();
        device.download_grads();
        REQUIRE(mirror.params.grads == cpu.params.grads);

        const double norm = gradient_norm(cpu.params.grads);
        REQUIRE(device.gradient_norm() == norm);
        adamw_step(cpu.params, cpu.optimizer, adamw, norm);
        device.adamw_step(adamw, norm);
        REQUIRE_FALSE(device.can_backward());
        std::fill(cpu.params.grads.begin(), cpu.params.grads.end(), 0.0f);
        device.zero_grad();
      }
      device.download_values();
      device.download_optimizer();
      REQUIRE(mirror.params.values == cpu.params.values);
      REQUIRE(mirror.optimizer.exp_avg == cpu.optimizer.exp_avg);
      REQUIRE(mirror.optimizer.exp_avg_sq == cpu.optimizer.exp_avg_sq);
      REQUIRE(mirror.optimizer.step == cpu.optimizer.step);
      Model<float> untrained(config);
      REQUIRE(mirror.params.values != untrained.params.values);

      // Evaluation without targets, on a shorter batch than the buffers hold.
      REQUIRE(device.forward(tokens.data(), nullptr, 1, Tn - 1, false) == 0.0);
      cpu.forward(tokens.data(), nullptr, 1, Tn - 1, false);
      REQUIRE(device_logits(device, config) == cpu.logits());
      REQUIRE_FALSE(device.can_backward());
    }
  }
}

TEST_CASE("CUDA model: weights written on the host reach the device, and the moments of a loaded optimiser",
          "[cuda][model]") {
  const ModelConfig config = moas_test::tiny_config(4, 2, 16);
  Model<float> cpu(config), mirror(config);
  CudaModel device(*moas_test::cpu_backend_table(), 0, mirror);
  for (size_t i = 0; i < cpu.params.values.size(); i++) cpu.params.values[i] += 0.01f * (float)(i % 7);
  mirror.params.values = cpu.params.values;
  device.upload_values();
  const auto tokens = moas_test::tokens_for(8, config.vocab_size, 2);
  const double loss = cpu.forward(tokens.data(), tokens.data(), 1, 8, false);
  REQUIRE(device.forward(tokens.data(), tokens.data(), 1, 8, false) == loss);

  mirror.optimizer.exp_avg.assign(cpu.params.values.size(), 0.5f);
  mirror.optimizer.exp_avg_sq.assign(cpu.params.values.size(), 0.25f);
  device.upload_optimizer();
  mirror.optimizer.exp_avg.clear();
  device.download_optimizer();
  REQUIRE(mirror.optimizer.exp_avg == std::vector<float>(cpu.params.values.size(), 0.5f));
  REQUIRE(mirror.optimizer.exp_avg_sq == std::vector<float>(cpu.params.values.size(), 0.25f));
}

TEST_CASE("CUDA model refuses what it does not run yet, naming it", "[cuda][model]") {
  Model<float> mixture_model(moas_test::moas_config(MoasMode::Soft, {4, 2, 1}));
  REQUIRE_THROWS_WITH(CudaModel(*moas_test::cpu_backend_table(), 0, mixture_model),
                      Catch::Contains("MoAS attention runs on MOAS_DEVICE_CPU"));
  Model<float> moh_model(moas_test::moh_config(4, 2, 16, 1, 2));
  REQUIRE_THROWS_WITH(CudaModel(*moas_test::cpu_backend_table(), 0, moh_model),
                      Catch::Contains("MoH attention runs on MOAS_DEVICE_CPU"));
  Model<float> dense(moas_test::tiny_config(4, 2, 16));
  REQUIRE_THROWS_WITH(CudaModel(*moas_test::cpu_backend_table(), 1, dense), Catch::Contains("one device"));
}
