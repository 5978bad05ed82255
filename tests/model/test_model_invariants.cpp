// SPEC §6 invariants 3 and 4 and LESSONS.md 1, 2, 3 on the float model, for every attention kind: one scheme, each
// MoAS mode and each MoH strategy (routing must be causal, batch-invariant and deterministic too).
#include <catch2/catch.hpp>

#include <omp.h>

#include "attention/routing.hpp"
#include "gradcheck.hpp"
#include "model/model.hpp"
#include "model_fixtures.hpp"
#include "ops/adamw.hpp"

using namespace moas;

namespace {

std::vector<moas_test::NamedConfig> all_configs() {
  auto configs = moas_test::option_configs();
  for (auto &routed : moas_test::routed_configs()) configs.push_back(routed);
  return configs;
}

// Every layer's per-token gates of the last forward, rows < `tokens` only.
std::vector<float> gates_before(const Model<float> &model, int64_t tokens) {
  std::vector<float> out;
  for (int64_t l = 0; l < model.config().n_layer; l++) {
    int64_t width = 0;
    const std::vector<float> g = model.gates(l, &width);
    out.insert(out.end(), g.begin(), g.begin() + std::min<int64_t>((int64_t)g.size(), tokens * width));
  }
  return out;
}

std::vector<float> eval_logits(Model<float> &model, const std::vector<int32_t> &tokens, int64_t B, int64_t Tn) {
  model.forward(tokens.data(), nullptr, B, Tn, false);
  return model.logits();
}

void train_steps(Model<float> &model, int steps) {
  const int64_t B = 3, Tn = 8;
  const AdamWSettings adamw{3e-3, 0.9, 0.99, 1e-8, 0.1, 1.0};
  for (int s = 0; s < steps; s++) {
    const auto tokens = moas_test::tokens_for(B * Tn, model.config().vocab_size, 100 + s);
    const auto targets = moas_test::tokens_for(B * Tn, model.config().vocab_size, 200 + s);
    std::fill(model.params.grads.begin(), model.params.grads.end(), 0.0f);
    model.forward(tokens.data(), targets.data(), B, Tn, true);
    model.backward();
    adamw_step(model.params, model.optimizer, adamw, gradient_norm(model.params.grads));
  }
}

// Batch 8 against each sequence alone: logits within SPEC §9's tolerance and the same routing decisions.
void check_batch_invariance(Model<float> &model) {
  const ModelConfig &config = model.config();
  const int64_t Tn = 8, V = config.vocab_size;
  const auto batch = moas_test::tokens_for(8 * Tn, V, 33);
  const std::vector<float> all = eval_logits(model, batch, 8, Tn);
  std::vector<std::vector<float>> batch_gates;
  for (int64_t l = 0; l < config.n_layer; l++) {
    int64_t width = 0;
    batch_gates.push_back(model.gates(l, &width));
  }
  for (int64_t b = 0; b < 8; b++) {
    const std::vector<int32_t> one(batch.begin() + b * Tn, batch.begin() + (b + 1) * Tn);
    const std::vector<float> alone = eval_logits(model, one, 1, Tn);
    const std::vector<float> slice(all.begin() + b * Tn * V, all.begin() + (b + 1) * Tn * V);
    REQUIRE(moas_test::close(alone, slice, 1e-5));
    for (int64_t l = 0; l < config.n_layer; l++) {
      int64_t width = 0;
      const std::vector<float> g = model.gates(l, &width);
      if (width == 0) continue;
      std::vector<int64_t> routes_alone, routes_batched;
      for (int64_t t = 0; t < Tn; t++) {
        routes_alone.push_back(argmax_lower(g.data() + t * width, width));
        routes_batched.push_back(argmax_lower(batch_gates[(size_t)l].data() + (b * Tn + t) * width, width));
      }
      REQUIRE(routes_alone == routes_batched);
    }
  }
}

}  // namespace

TEST_CASE("GQA equals MHA whose kv heads are copied across each group (SPEC §6.3)", "[model][invariant]") {
  for (int64_t kv : {1, 2}) {
    DYNAMIC_SECTION("kv heads " << kv) {
      const ModelConfig gqa_config = moas_test::tiny_config(4, kv, 16);
      const ModelConfig mha_config = moas_test::tiny_config(4, 4, 16);
      Model<float> gqa(gqa_config), mha(mha_config);
      const int64_t C = 16, d = 4, group = 4 / kv;
      for (const ParamInfo &info : mha.params.infos()) {
        const std::string &name = info.name;
        float *dst = mha.params.values.data() + info.offset;
        const auto qpos = name.find("attn.c_attn.weight");
        if (qpos == std::string::npos) {
          const ParamInfo &src = gqa.params.find(name);
          std::copy_n(gqa.params.values.data() + src.offset, info.numel, dst);
          continue;
        }
        const std::string prefix = name.substr(0, qpos) + "attn.";
        const float *q = gqa.params.values.data() + gqa.params.find(prefix + "q_proj.weight").offset;
        const float *k = gqa.params.values.data() + gqa.params.find(prefix + "k_proj.weight").offset;
        const float *v = gqa.params.values.data() + gqa.params.find(prefix + "v_proj.weight").offset;
        std::copy_n(q, C * C, dst);
        for (int64_t h = 0; h < 4; h++) {
          std::copy_n(k + (h / group) * d * C, d * C, dst + C * C + h * d * C);
          std::copy_n(v + (h / group) * d * C, d * C, dst + 2 * C * C + h * d * C);
        }
      }
      const auto tokens = moas_test::tokens_for(2 * 8, 11, 9);
      REQUIRE(moas_test::close(eval_logits(gqa, tokens, 2, 8), eval_logits(mha, tokens, 2, 8), 1e-5));
    }
  }
}

TEST_CASE("causality: changing token j never changes outputs or routing before j (SPEC §6.4, LESSONS.md 1)",
          "[model][invariant]") {
  for (const auto &[name, config] : all_configs()) {
    DYNAMIC_SECTION(name) {
      Model<float> model(config);
      const int64_t Tn = 8, V = config.vocab_size;
      auto tokens = moas_test::tokens_for(Tn, V, 21);
      const std::vector<float> base = eval_logits(model, tokens, 1, Tn);
      std::vector<std::vector<float>> base_gates;  // [j]: the routing of positions < j
      for (int64_t j = 0; j < Tn; j++) base_gates.push_back(gates_before(model, j));
      for (int64_t j = 0; j < Tn; j++) {
        auto changed = tokens;
        changed[(size_t)j] = (changed[(size_t)j] + 1) % (int32_t)V;
        const std::vector<float> out = eval_logits(model, changed, 1, Tn);
        // Routing before j is bit-identical. Where a later token's choice moves rows between branches or heads,
        // earlier rows go through products of another size, whose rounding may differ in the last bit: there the
        // earlier logits must agree to SPEC §9's tolerance; everywhere else bit for bit.
        REQUIRE(gates_before(model, j) == base_gates[(size_t)j]);
        const bool rows_move = (config.attention == AttentionKind::Moas && config.moas.mode == MoasMode::Top1) ||
                               (config.attention == AttentionKind::Moh &&
                                config.heads.strategy == HeadStrategy::MixtureOfHeads);
        const std::vector<float> out_before(out.begin(), out.begin() + j * V),
            base_before(base.begin(), base.begin() + j * V);
        if (rows_move) REQUIRE(moas_test::close(out_before, base_before, 1e-6));
        else REQUIRE(out_before == base_before);
        bool moved = false;
        for (int64_t i = j * V; i < (j + 1) * V; i++) moved |= out[(size_t)i] != base[(size_t)i];
        REQUIRE(moved);
      }
    }
  }
}

TEST_CASE("batch invariance: a sequence's logits do not depend on the rest of the batch", "[model][invariant]") {
  for (const auto &[name, config] : all_configs()) {
    DYNAMIC_SECTION(name) {
      Model<float> model(config);
      check_batch_invariance(model);
    }
  }
}

TEST_CASE("determinism: same seed and data give bit-identical weights, for any thread count (LESSONS.md 3)",
          "[model][invariant]") {
  ModelConfig dense = moas_test::tiny_config(4, 2, 16);
  dense.dropout = 0.2f;
  auto configs = moas_test::routed_configs();
  configs.insert(configs.begin(), {"GQA 4/2 dropout 0.2", dense});
  for (const auto &[name, config] : configs) {
    DYNAMIC_SECTION(name) {
      const int saved = omp_get_max_threads();
      omp_set_num_threads(2);
      Model<float> first(config), second(config);
      train_steps(first, 4);
      train_steps(second, 4);
      omp_set_num_threads(1);
      Model<float> single(config);
      train_steps(single, 4);
      omp_set_num_threads(saved);
      REQUIRE(first.params.values == second.params.values);
      REQUIRE(first.params.values == single.params.values);
      Model<float> untrained(config);
      REQUIRE(first.params.values != untrained.params.values);
    }
  }
}

TEST_CASE("dropout: training forwards differ step to step, eval forwards are deterministic", "[model]") {
  ModelConfig config = moas_test::tiny_config(4, 4, 16);
  config.dropout = 0.2f;
  Model<float> model(config);
  const auto tokens = moas_test::tokens_for(8, 11, 5);
  const auto targets = moas_test::tokens_for(8, 11, 6);
  const double t1 = model.forward(tokens.data(), targets.data(), 1, 8, true);
  const double t2 = model.forward(tokens.data(), targets.data(), 1, 8, true);
  const double e1 = model.forward(tokens.data(), targets.data(), 1, 8, false);
  const double e2 = model.forward(tokens.data(), targets.data(), 1, 8, false);
  REQUIRE(t1 != t2);
  REQUIRE(e1 == e2);
  REQUIRE(model.training_forwards == 2);
}
