// TF32 and BF16 matrix products (moas_model_config.matmul_precision) where no GPU exists: the CPU table rounds a
// product's inputs as tensor cores do (round_mantissa) and keeps the sums in fp32, so the CUDA model's orchestration
// shows what the modes change — every result moves by about its rounding, none by more, and training still learns —
// and that the precision belongs to a model and a thread, never leaking into another model's fp32 products.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <thread>
#include <vector>

#include "cuda/cpu_backend_table.hpp"
#include "cuda_host/cuda_model.hpp"
#include "model/model.hpp"
#include "model_fixtures.hpp"

using namespace moas;
using moas_test::round_mantissa;

namespace {

// max|a - b| / max|b| over all elements (SPEC §9's measure, one tensor).
double relative_difference(const std::vector<float> &a, const std::vector<float> &b) {
  double largest = 0, diff = 0;
  for (size_t i = 0; i < a.size(); i++) {
    largest = std::max(largest, (double)std::fabs(b[i]));
    diff = std::max(diff, (double)std::fabs(a[i] - b[i]));
  }
  return diff / largest;
}

std::vector<float> device_logits(const CudaModel &model, int64_t vocab) {
  std::vector<float> out((size_t)(model.last_batch() * model.last_seq() * vocab));
  model.logits(out.data());
  return out;
}

struct Run {
  double loss;
  std::vector<float> logits, grads;
};

// One training forward and backward of a fresh model with `config`'s initial weights on the CPU table.
Run device_step(ModelConfig config, int32_t precision, const std::vector<int32_t> &tokens,
                const std::vector<int32_t> &targets, int64_t B) {
  config.matmul_precision = precision;
  Model<float> mirror(config);
  CudaModel device(*moas_test::cpu_backend_table(), 0, mirror);
  device.use_device();
  Run run;
  run.loss = device.forward(tokens.data(), targets.data(), B, config.block_size, true);
  run.logits = device_logits(device, config.vocab_size);
  device.backward();
  device.download_grads();
  run.grads = mirror.params.grads;
  return run;
}

}  // namespace

TEST_CASE("round_mantissa rounds to nearest, ties to even, as TF32 and bfloat16 conversion does", "[cuda][precision]") {
  REQUIRE(round_mantissa(1.0f + 0x1p-8f, 7) == 1.0f);                // a tie, to the even 1
  REQUIRE(round_mantissa(1.0f + 3 * 0x1p-8f, 7) == 1.0f + 0x1p-6f);  // a tie, to the even 1 + 2^-6
  REQUIRE(round_mantissa(1.0f + 0x1p-8f + 0x1p-20f, 7) == 1.0f + 0x1p-7f);
  REQUIRE(round_mantissa(-(1.0f + 0x1p-8f + 0x1p-20f), 7) == -(1.0f + 0x1p-7f));
  REQUIRE(round_mantissa(1.0f + 0x1p-11f, 10) == 1.0f);
  REQUIRE(round_mantissa(1.0f + 0x1p-10f, 10) == 1.0f + 0x1p-10f);  // representable: unchanged
  REQUIRE(round_mantissa(1.0f + 0x1p-10f + 0x1p-11f, 10) == 1.0f + 0x1p-9f);
  REQUIRE(round_mantissa(2.0f - 0x1p-9f, 7) == 2.0f);  // the carry moves into the exponent
  REQUIRE(std::isinf(round_mantissa(FLT_MAX, 7)));     // past bfloat16's largest finite value
  REQUIRE(std::isnan(round_mantissa(NAN, 7)));
  REQUIRE(round_mantissa(0.0f, 7) == 0.0f);
}

TEST_CASE("CUDA model on the CPU table: TF32 and BF16 products move loss, logits and gradients by their rounding only",
          "[cuda][precision]") {
  ModelConfig dense = moas_test::tiny_config(4, 2, 32);
  dense.position = PositionKind::Rope;
  const std::vector<moas_test::NamedConfig> configs = {
      {"GQA 4/2 RoPE", dense},
      {"MoAS soft MHA/GQA-2/MQA", moas_test::moas_config(MoasMode::Soft, {4, 2, 1}, 4, 32)},
      {"MoH 1 shared + 2 of 3", moas_test::moh_config(4, 4, 32, 1, 2)}};
  // Bounds about 5x the differences measured here (TF32: logits 2-3e-4, gradients 2-4e-4; BF16: 1.3-2e-3, 2-2.7e-3),
  // from inputs rounded by up to 2^-11 (TF32) or 2^-8 (bfloat16) of their size.
  struct Mode {
    int32_t precision;
    const char *name;
    double loss_tol, logits_tol, grads_tol;
  };
  const Mode modes[] = {{MOAS_MATMUL_TF32, "TF32", 2e-5, 1.5e-3, 2e-3}, {MOAS_MATMUL_BF16, "BF16", 3e-4, 1e-2, 1.5e-2}};
  for (const auto &[name, config] : configs) {
    const int64_t B = 3;
    const auto tokens = moas_test::tokens_for(B * config.block_size, config.vocab_size, 21);
    const auto targets = moas_test::tokens_for(B * config.block_size, config.vocab_size, 22);
    const Run fp32 = device_step(config, MOAS_MATMUL_FP32, tokens, targets, B);
    Model<float> cpu(config);
    REQUIRE(cpu.forward(tokens.data(), targets.data(), B, config.block_size, true) == fp32.loss);
    for (const Mode &mode : modes) {
      DYNAMIC_SECTION(name << ", " << mode.name) {
        const Run run = device_step(config, mode.precision, tokens, targets, B);
        const double loss = std::fabs(run.loss - fp32.loss) / fp32.loss;
        const double logits = relative_difference(run.logits, fp32.logits);
        const double grads = relative_difference(run.grads, fp32.grads);
        INFO("relative differences: loss " << loss << ", logits " << logits << ", gradients " << grads);
        REQUIRE(logits > 0);  // the products did round
        REQUIRE(grads > 0);
        REQUIRE(loss <= mode.loss_tol);
        REQUIRE(logits <= mode.logits_tol);
        REQUIRE(grads <= mode.grads_tol);
      }
    }
  }
}

TEST_CASE("CUDA model on the CPU table: a BF16 model trains as far as the fp32 one", "[cuda][precision]") {
  const ModelConfig config = moas_test::moas_config(MoasMode::Top1, {4, 2, 1}, 4, 32);
  const int64_t B = 4, Tn = config.block_size;
  std::vector<int32_t> tokens((size_t)(B * Tn)), targets((size_t)(B * Tn));
  for (size_t i = 0; i < tokens.size(); i++) {  // a cycle to learn: the next token is (token + 3) mod V
    tokens[i] = (int32_t)((i * 5) % (size_t)config.vocab_size);
    targets[i] = (int32_t)((tokens[i] + 3) % config.vocab_size);
  }
  const AdamWSettings adamw{1e-2, 0.9, 0.95, 1e-8, 0.0, 1.0};
  auto train = [&](int32_t precision) {
    ModelConfig c = config;
    c.matmul_precision = precision;
    Model<float> mirror(c);
    CudaModel device(*moas_test::cpu_backend_table(), 0, mirror);
    device.use_device();
    std::vector<double> losses;
    for (int step = 0; step < 60; step++) {
      losses.push_back(device.forward(tokens.data(), targets.data(), B, Tn, true));
      device.backward();
      device.adamw_step(adamw, device.gradient_norm());
      device.zero_grad();
    }
    return losses;
  };
  const std::vector<double> fp32 = train(MOAS_MATMUL_FP32), bf16 = train(MOAS_MATMUL_BF16);
  INFO("fp32 loss " << fp32.front() << " -> " << fp32.back() << ", bf16 " << bf16.front() << " -> " << bf16.back());
  REQUIRE(fp32.back() < 0.2 * fp32.front());
  REQUIRE(bf16.back() < 0.2 * bf16.front());
  REQUIRE(std::fabs(bf16.back() - fp32.back()) <= 0.1 * fp32.front());
}

TEST_CASE("CUDA model on the CPU table: the matmul precision is each model's, bound per thread at every entry",
          "[cuda][precision]") {
  const ModelConfig config = moas_test::tiny_config(4, 2, 32);
  ModelConfig bf16_config = config;
  bf16_config.matmul_precision = MOAS_MATMUL_BF16;
  Model<float> cpu(config), fp32_mirror(config), bf16_mirror(bf16_config);
  CudaModel fp32(*moas_test::cpu_backend_table(), 0, fp32_mirror);
  CudaModel bf16(*moas_test::cpu_backend_table(), 0, bf16_mirror);
  const int64_t B = 2, Tn = config.block_size;
  const auto tokens = moas_test::tokens_for(B * Tn, config.vocab_size, 4);
  cpu.forward(tokens.data(), nullptr, B, Tn, false);

  // Interleaved on one thread, each entry binding its model's precision: the fp32 model stays the CPU's bit for bit.
  for (int round = 0; round < 2; round++) {
    bf16.use_device();
    bf16.forward(tokens.data(), nullptr, B, Tn, false);
    REQUIRE(device_logits(bf16, config.vocab_size) != cpu.logits());
    fp32.use_device();
    fp32.forward(tokens.data(), nullptr, B, Tn, false);
    REQUIRE(device_logits(fp32, config.vocab_size) == cpu.logits());
  }
  // Another thread binding BF16 leaves this thread's fp32 binding alone.
  std::thread other([&] {
    bf16.use_device();
    bf16.forward(tokens.data(), nullptr, B, Tn, false);
  });
  other.join();
  fp32.forward(tokens.data(), nullptr, B, Tn, false);
  REQUIRE(device_logits(fp32, config.vocab_size) == cpu.logits());
}
