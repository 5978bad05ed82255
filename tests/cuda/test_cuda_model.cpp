// The CUDA model's orchestration (src/cuda_host/cuda_model.cpp) on the table of CPU functions
// (cpu_backend_table.hpp): with the same functions underneath, it must reproduce Model<float> bit for bit — loss,
// logits, every gradient, AdamW's weights and moments over several steps — for every option the CUDA model takes
// (decode steps, where the CPU model reads re-laid weights, to float rounding). A step in the wrong order, a
// wrong buffer, stride, offset, dropout site or position would show as a difference here, with no GPU needed.
#include <catch2/catch.hpp>

#include <string>
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_backend_table.hpp"
#include "cuda_host/cuda_model.hpp"
#include "model/model.hpp"
#include "model/model_fixtures.hpp"
#include "model/model_gradcheck.hpp"

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

  // MoAS (CudaMoas): every mode over MHA/GQA-2/MQA branches, top-1's routed rows with each position kind and the
  // window, and dropout on the gates and in every branch.
  out.push_back({"MoAS static MHA/GQA-2/MQA", moas_test::moas_config(MoasMode::Static, {4, 2, 1})});
  ModelConfig moas_soft = moas_test::moas_config(MoasMode::Soft, {4, 2, 1});
  moas_soft.bias = true;
  out.push_back({"MoAS soft with biases", moas_soft});
  out.push_back({"MoAS top1 MHA/GQA-2/MQA", moas_test::moas_config(MoasMode::Top1, {4, 2, 1})});
  ModelConfig moas_rope = moas_test::moas_config(MoasMode::Top1, {3, 1}, 6, 24);
  moas_rope.position = PositionKind::Rope;
  moas_rope.norm = NormKind::RMSNorm;
  moas_rope.bias = true;
  out.push_back({"MoAS top1 two branches RoPE RMSNorm biases", moas_rope});
  for (const MoasMode mode : {MoasMode::Soft, MoasMode::Top1}) {
    ModelConfig moas_cope = moas_test::moas_config(mode, {4, 2, 1});
    moas_cope.position = PositionKind::Cope;
    moas_cope.cope_max_pos = 5;
    moas_cope.window = 3;
    out.push_back({std::string("MoAS ") + (mode == MoasMode::Soft ? "soft" : "top1") + " CoPE P=5, window 3",
                   moas_cope});
  }
  ModelConfig moas_drop = moas_test::moas_config(MoasMode::Top1, {4, 2, 1});
  moas_drop.dropout = 0.3f;
  out.push_back({"MoAS top1 dropout 0.3 (gates and branches)", moas_drop});
  ModelConfig moas_four = moas_test::moas_config(MoasMode::Soft, {4, 4, 2, 1});
  moas_four.dropout = 0.3f;
  moas_four.mlp = MlpKind::SwiGlu;
  out.push_back({"MoAS soft four branches, dropout 0.3, SwiGLU", moas_four});

  // MoH (CudaMoh). 2 x 8 tokens are few per head set, so Model<float> projects whole as CudaMoh always does.
  out.push_back({"MoH 1 shared + 2 of 3, MHA", moas_test::moh_config(4, 4, 16, 1, 2)});
  ModelConfig routed_only = moas_test::moh_config(4, 2, 16, 0, 2);
  routed_only.position = PositionKind::Rope;
  out.push_back({"MoH routed only 2 of 4, GQA 4/2, RoPE", routed_only});
  ModelConfig two_shared = moas_test::moh_config(6, 3, 24, 2, 2);
  two_shared.bias = true;
  two_shared.dropout = 0.3f;
  out.push_back({"MoH 2 shared + 2 of 4, GQA 6/3, biases, dropout 0.3", two_shared});
  ModelConfig paper = moas_test::moh_config(4, 1, 16, 1, 1);
  paper.heads.reference_gates = false;
  paper.norm = NormKind::RMSNorm;
  out.push_back({"MoH paper gates 1 shared + 1 of 3, MQA, RMSNorm", paper});
  ModelConfig moh_cope = moas_test::moh_config(4, 2, 16, 1, 2);
  moh_cope.position = PositionKind::Cope;
  moh_cope.cope_max_pos = 5;
  moh_cope.window = 3;
  out.push_back({"MoH 1 shared + 2 of 3, GQA 4/2, CoPE P=5, window 3", moh_cope});
  ModelConfig pruned = moas_test::static_pruning_config(4, 2, 16, 3);
  pruned.bias = true;
  out.push_back({"StaticPruning 3 of 4, GQA 4/2, biases", pruned});
  ModelConfig pruned_rope = moas_test::static_pruning_config(6, 3, 24, 1);
  pruned_rope.position = PositionKind::Rope;
  out.push_back({"StaticPruning 1 of 6, GQA 6/3, RoPE", pruned_rope});
  ModelConfig all_heads = moas_test::moh_config(4, 2, 16, 1, 2);
  all_heads.heads.strategy = HeadStrategy::AllHeads;  // one scheme, on both sides
  out.push_back({"MoH AllHeads, GQA 4/2", all_heads});
  return out;
}

std::vector<float> device_logits(const CudaModel &model, const ModelConfig &c) {
  std::vector<float> out((size_t)(model.last_batch() * model.last_seq() * c.vocab_size));
  model.logits(out.data());
  return out;
}

// SPEC §9: max|a - b| <= tol max|b|, per tensor of `params`' layout.
void require_close_per_tensor(const ParamTable<float> &params, const std::vector<float> &a,
                              const std::vector<float> &b, double tol, const char *what) {
  for (const ParamInfo &info : params.infos()) {
    double largest = 0, diff = 0;
    for (int64_t i = info.offset; i < info.offset + info.numel; i++) {
      largest = std::max(largest, (double)std::fabs(b[(size_t)i]));
      diff = std::max(diff, (double)std::fabs(a[(size_t)i] - b[(size_t)i]));
    }
    INFO(what << " " << info.name << ": max |difference| " << diff << ", max |reference| " << largest);
    REQUIRE(diff <= tol * largest);
  }
}

// Decoding's configurations: every block kind, each position kind, and windows far shorter than the 24 positions
// decoded, so that the ring buffer wraps.
std::vector<moas_test::NamedConfig> decode_configs() {
  auto longer = [](ModelConfig c, int64_t window) {
    c.block_size = 24;
    c.window = window;
    return c;
  };
  ModelConfig rope = moas_test::tiny_config(4, 2, 16);
  rope.position = PositionKind::Rope;
  ModelConfig cope = moas_test::tiny_config(4, 2, 16);
  cope.position = PositionKind::Cope;
  cope.cope_max_pos = 5;
  ModelConfig moas_rope = moas_test::moas_config(MoasMode::Top1, {4, 2, 1});
  moas_rope.position = PositionKind::Rope;
  ModelConfig moh_cope = moas_test::moh_config(4, 2, 16, 1, 2);
  moh_cope.position = PositionKind::Cope;
  moh_cope.cope_max_pos = 4;
  return {
      {"GQA 4/2 RoPE", longer(rope, 0)},
      {"MHA learned positions", longer(moas_test::tiny_config(4, 4, 16), 0)},
      {"GQA 4/2 CoPE P=5, window 3", longer(cope, 3)},
      {"MoAS soft MHA/GQA-2/MQA", longer(moas_test::moas_config(MoasMode::Soft, {4, 2, 1}), 0)},
      {"MoAS top1 MHA/GQA-2/MQA", longer(moas_test::moas_config(MoasMode::Top1, {4, 2, 1}), 0)},
      {"MoH 1 shared + 2 of 3, GQA 4/2", longer(moas_test::moh_config(4, 2, 16, 1, 2), 0)},
      {"StaticPruning 3 of 4, GQA 4/2", longer(moas_test::static_pruning_config(4, 2, 16, 3), 0)},
      {"MQA learned positions, window 1", longer(moas_test::tiny_config(4, 1, 16), 1)},
      {"MoAS top1 RoPE, window 2", longer(moas_rope, 2)},
      {"MoAS soft, window 2", longer(moas_test::moas_config(MoasMode::Soft, {4, 2, 1}), 2)},
      {"MoH CoPE P=4, window 2", longer(moh_cope, 2)},
      {"StaticPruning 1 of 4, window 2", longer(moas_test::static_pruning_config(4, 2, 16, 1), 2)},
  };
}

// Rows [t0, t1) of every sequence of a [B, Tn] token matrix.
std::vector<int32_t> columns(const std::vector<int32_t> &tokens, int64_t B, int64_t Tn, int64_t t0, int64_t t1) {
  std::vector<int32_t> out;
  for (int64_t b = 0; b < B; b++) out.insert(out.end(), tokens.begin() + b * Tn + t0, tokens.begin() + b * Tn + t1);
  return out;
}

}  // namespace

// Model<float> reads a decode step's weights (up to kSkinnyRows tokens) from its packed copy, whose dot products sum
// in another order than the table's gemm: the decode tests below hold both to float rounding (1e-6 of the largest
// logit), far below what a wrong cache row or position would change.
constexpr double kPackedRounding = 1e-6;

TEST_CASE("CUDA model on the CPU table: KV-cache decoding equals Model<float>'s to rounding, and the full forward",
          "[cuda][model][decode]") {
  // Forwards of chunks[0], chunks[1], ... positions (the last size repeating, the last forward cut to what is left).
  // Chunks of 3 with window 2 and of 4 with window 3 move the kept rows onto rows they overlap (the device copies
  // them in steps); the uneven ones also grow the buffer while it holds positions.
  const std::vector<std::vector<int64_t>> schedules = {{3, 1}, {3, 1, 5, 2, 1, 4, 2}, {1}, {3}, {4}};
  for (const auto &[name, config] : decode_configs()) {
    DYNAMIC_SECTION(name) {
      Model<float> cpu(config);
      moas_test::randomise_cope_embeddings(cpu.params);
      for (const ParamInfo &info : cpu.params.infos())  // decisions far from ties, the same in both forwards
        if (moas_test::is_router_weight(info.name))
          for (int64_t i = 0; i < info.numel; i++) cpu.params.values[(size_t)(info.offset + i)] *= 40.0f;
      Model<float> mirror(config);
      mirror.params.values = cpu.params.values;
      CudaModel device(*moas_test::cpu_backend_table(), 0, mirror);
      const int64_t B = 2, Tn = config.block_size, V = config.vocab_size;
      const auto tokens = moas_test::tokens_for(B * Tn, V, 17);
      device.forward(tokens.data(), nullptr, B, Tn, false);
      const std::vector<float> full = device_logits(device, config);

      for (const std::vector<int64_t> &chunks : schedules) {
        INFO("chunks from " << chunks[0] << ", " << chunks.size() << " sizes");
        KvCache<float> host;
        CudaKvCache on_device;
        cpu.allocate_cache(&host, B, Tn);
        device.allocate_cache(&on_device, B, Tn);
        REQUIRE(on_device.bytes_per_token() == host.bytes_per_token());
        std::vector<float> decoded((size_t)(B * Tn * V));
        int64_t moves = 0;
        for (int64_t t = 0, c = 0; t < Tn; c++) {
          INFO("positions " << t << " onwards");
          const int64_t n = std::min(chunks[std::min((size_t)c, chunks.size() - 1)], Tn - t);
          const int64_t first_key = on_device.layers[0].first_key;
          const auto step = columns(tokens, B, Tn, t, t + n);
          cpu.forward(step.data(), nullptr, B, n, false, &host);
          device.forward(step.data(), nullptr, B, n, false, &on_device);
          const std::vector<float> logits = device_logits(device, config);
          REQUIRE(moas_test::close(logits, cpu.logits(), kPackedRounding));
          REQUIRE(on_device.length == host.length);
          for (size_t l = 0; l < host.layers.size(); l++) {  // the same rows hold the same positions
            REQUIRE(on_device.layers[l].rows == host.layers[l].rows);
            REQUIRE(on_device.layers[l].first_key == host.layers[l].first_key);
          }
          for (int64_t b = 0; b < B; b++)
            std::copy_n(logits.begin() + b * n * V, n * V, decoded.begin() + (b * Tn + t) * V);
          moves += on_device.layers[0].first_key != first_key;
          t += n;
        }
        REQUIRE(moas_test::close(decoded, full, 1e-5));  // SPEC §9's fp32 tolerance (test_decode's 1e-9 is double's)
        REQUIRE(on_device.allocated_bytes() == host.allocated_bytes());
        if (config.window > 0) REQUIRE(moves >= 2);  // the ring buffer wrapped

        // After a reset the device cache starts from position 0 again, as the host one does.
        on_device.reset();
        host.reset();
        device.forward(tokens.data(), nullptr, B, 4, false, &on_device);
        cpu.forward(tokens.data(), nullptr, B, 4, false, &host);
        REQUIRE(moas_test::close(device_logits(device, config), cpu.logits(), kPackedRounding));
      }
    }
  }
}

TEST_CASE("CUDA model on the CPU table: a full device cache refuses more positions and stays as it was",
          "[cuda][model][decode]") {
  ModelConfig config = moas_test::tiny_config(4, 2, 16);
  config.window = 2;
  Model<float> mirror(config);
  CudaModel device(*moas_test::cpu_backend_table(), 0, mirror);
  CudaKvCache cache;
  device.allocate_cache(&cache, 1, 5);
  const auto tokens = moas_test::tokens_for(6, config.vocab_size, 3);
  device.forward(tokens.data(), nullptr, 1, 4, false, &cache);
  REQUIRE_THROWS_AS(device.forward(tokens.data(), nullptr, 1, 2, false, &cache), moas::Error);
  REQUIRE(cache.length == 4);
  device.forward(tokens.data(), nullptr, 1, 1, false, &cache);
  REQUIRE(cache.length == 5);
}

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
        REQUIRE(device.aux_loss() == cpu.aux_loss());
        for (int64_t l = 0; l < config.n_layer; l++) {
          RouterStats want, got;
          REQUIRE(device.router_stats(l, &got) == cpu.router_stats(l, &want));
          REQUIRE(got.share == want.share);
          REQUIRE(got.mean_gate == want.mean_gate);
          REQUIRE(got.top_share == want.top_share);
          REQUIRE(got.entropy == want.entropy);
          REQUIRE(got.aux_loss == want.aux_loss);
        }
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

TEST_CASE("CUDA MoH with many tokens per head set, where Model<float> projects per group, equals it to 1e-5",
          "[cuda][model]") {
  // CudaMoh always projects whole; the CPU groups once a batch has kWideGroup (64) tokens per distinct head set:
  // the same sums in another order. 64 x 8 tokens are enough for any routing of these configs (6 sets at most, or
  // none: with no routed head active the CPU projects only the shared heads).
  ModelConfig routed = moas_test::moh_config(4, 2, 16, 0, 2);
  routed.bias = true;
  routed.position = PositionKind::Rope;
  ModelConfig none_active = moas_test::moh_config(4, 4, 16, 2, 0);
  const std::vector<moas_test::NamedConfig> configs = {{"MoH routed only 2 of 4, GQA 4/2, RoPE, biases", routed},
                                                       {"MoH 2 shared, 0 of 2 routed active", none_active}};
  const AdamWSettings adamw{3e-3, 0.9, 0.95, 1e-8, 0.1, 1.0};
  const double tol = 1e-5;
  for (const auto &[name, config] : configs) {
    DYNAMIC_SECTION(name) {
      Model<float> cpu(config), mirror(config);
      CudaModel device(*moas_test::cpu_backend_table(), 0, mirror);
      const int64_t B = 64, Tn = config.block_size;
      const auto tokens = moas_test::tokens_for(B * Tn, config.vocab_size, 8);
      const auto targets = moas_test::tokens_for(B * Tn, config.vocab_size, 9);
      for (int step = 0; step < 3; step++) {
        INFO("step " << step);
        const double loss = cpu.forward(tokens.data(), targets.data(), B, Tn, true);
        REQUIRE(device.forward(tokens.data(), targets.data(), B, Tn, true) == Approx(loss).epsilon(tol));
        REQUIRE(device.aux_loss() == Approx(cpu.aux_loss()).epsilon(tol));
        const std::vector<float> logits = device_logits(device, config);
        double largest = 0, diff = 0;
        for (size_t i = 0; i < logits.size(); i++) {
          largest = std::max(largest, (double)std::fabs(cpu.logits()[i]));
          diff = std::max(diff, (double)std::fabs(logits[i] - cpu.logits()[i]));
        }
        REQUIRE(diff <= tol * largest);
        cpu.backward();
        device.backward();
        device.download_grads();
        require_close_per_tensor(cpu.params, mirror.params.grads, cpu.params.grads, tol, "gradient");
        adamw_step(cpu.params, cpu.optimizer, adamw, gradient_norm(cpu.params.grads));
        device.adamw_step(adamw, device.gradient_norm());
        std::fill(cpu.params.grads.begin(), cpu.params.grads.end(), 0.0f);
        device.zero_grad();
      }
      device.download_values();
      require_close_per_tensor(cpu.params, mirror.params.values, cpu.params.values, tol, "weight");
    }
  }
}

// Top-1's edge cases: a branch that takes every token (Scheme's dense path inside a routed block) and branches that
// take none (empty row sets through projections, attention and the mixing).
TEST_CASE("CUDA model on the CPU table: MoAS top-1 with every token on one branch equals Model<float> bit for bit",
          "[cuda][model]") {
  for (const int64_t chosen : {0, 2}) {
    DYNAMIC_SECTION("every token on branch " << chosen) {
      ModelConfig config = moas_test::moas_config(MoasMode::Top1, {4, 2, 1});
      config.bias = true;
      Model<float> cpu(config);
      for (int64_t l = 0; l < config.n_layer; l++) {
        const ParamInfo &b2 = cpu.params.find("transformer.h." + std::to_string(l) + ".attn.router.2.bias");
        cpu.params.values[(size_t)(b2.offset + chosen)] = 20.0f;  // its gate near 1 for every token
      }
      Model<float> mirror(config);
      mirror.params.values = cpu.params.values;
      CudaModel device(*moas_test::cpu_backend_table(), 0, mirror);
      const int64_t B = 2, Tn = config.block_size;
      const auto tokens = moas_test::tokens_for(B * Tn, config.vocab_size, 5);
      const double loss = cpu.forward(tokens.data(), tokens.data(), B, Tn, true);
      REQUIRE(device.forward(tokens.data(), tokens.data(), B, Tn, true) == loss);
      REQUIRE(device_logits(device, config) == cpu.logits());
      REQUIRE(device.aux_loss() == cpu.aux_loss());
      RouterStats stats;
      REQUIRE(device.router_stats(0, &stats));
      REQUIRE(stats.top_share[(size_t)chosen] == Approx(1.0));
      cpu.backward();
      device.backward();
      device.download_grads();
      REQUIRE(mirror.params.grads == cpu.params.grads);
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

TEST_CASE("CUDA model: a device index the backend does not have is refused, naming it", "[cuda][model]") {
  Model<float> dense(moas_test::tiny_config(4, 2, 16));
  REQUIRE_THROWS_WITH(CudaModel(*moas_test::cpu_backend_table(), 1, dense), Catch::Contains("one device"));
}

// Decoding samples from each sequence's last row only, which the device gathers before downloading: it must be that
// row of the full logits, for a prefill of several positions and for a one-token step, and the router statistics
// (computed when asked) must follow the last forward, as the CPU's do.
TEST_CASE("CUDA model on the CPU table: last_logits are each sequence's last row of the CPU logits",
          "[cuda][model][decode]") {
  ModelConfig config = moas_test::moas_config(MoasMode::Top1, {4, 2, 1});
  config.vocab_size = 13;
  Model<float> cpu(config), mirror(config);
  CudaModel device(*moas_test::cpu_backend_table(), 0, mirror);
  const int64_t B = 3, Tn = config.block_size, V = config.vocab_size;
  const auto tokens = moas_test::tokens_for(B * Tn, V, 23);
  KvCache<float> host;
  CudaKvCache on_device;
  cpu.allocate_cache(&host, B, Tn);
  device.allocate_cache(&on_device, B, Tn);
  int64_t t = 0;
  for (const int64_t n : {5, 1}) {
    INFO("positions " << t << " to " << t + n);
    const auto step = columns(tokens, B, Tn, t, t + n);
    cpu.forward(step.data(), nullptr, B, n, false, &host);
    device.forward(step.data(), nullptr, B, n, false, &on_device);
    std::vector<float> want;
    for (int64_t b = 0; b < B; b++)
      want.insert(want.end(), cpu.logits().begin() + (b * n + n - 1) * V, cpu.logits().begin() + (b * n + n) * V);
    std::vector<float> got((size_t)(B * V));
    device.last_logits(got.data());
    REQUIRE(moas_test::close(got, want, kPackedRounding));
    // The full logits stay on the device: the row it gathered is the one the device holds, bit for bit.
    const std::vector<float> full = device_logits(device, config);
    REQUIRE(moas_test::close(full, cpu.logits(), kPackedRounding));
    for (int64_t b = 0; b < B; b++)
      REQUIRE(std::equal(got.begin() + b * V, got.begin() + (b + 1) * V, full.begin() + (b * n + n - 1) * V));
    for (int64_t l = 0; l < config.n_layer; l++) {
      RouterStats stats_want, stats_got;
      REQUIRE(device.router_stats(l, &stats_got) == cpu.router_stats(l, &stats_want));
      REQUIRE(stats_got.top_share == stats_want.top_share);  // the same choices
      REQUIRE(stats_got.entropy == Approx(stats_want.entropy).epsilon(1e-5));
      REQUIRE(stats_got.aux_loss == Approx(stats_want.aux_loss).epsilon(1e-5));
    }
    t += n;
  }
}
