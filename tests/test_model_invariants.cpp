// SPEC §6 invariants 3 and 4 and LESSONS.md 2, 3 on the float model.
#include <catch2/catch.hpp>

#include <omp.h>

#include "adamw.hpp"
#include "gradcheck.hpp"
#include "model.hpp"
#include "model_fixtures.hpp"

using namespace moas;

namespace {

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

TEST_CASE("causality: changing token j never changes outputs before j (SPEC §6.4)", "[model][invariant]") {
  for (const auto &[name, config] : moas_test::option_configs()) {
    DYNAMIC_SECTION(name) {
      Model<float> model(config);
      const int64_t Tn = 8, V = config.vocab_size;
      auto tokens = moas_test::tokens_for(Tn, V, 21);
      const std::vector<float> base = eval_logits(model, tokens, 1, Tn);
      for (int64_t j = 0; j < Tn; j++) {
        auto changed = tokens;
        changed[(size_t)j] = (changed[(size_t)j] + 1) % (int32_t)V;
        const std::vector<float> out = eval_logits(model, changed, 1, Tn);
        for (int64_t i = 0; i < j * V; i++) REQUIRE(out[(size_t)i] == base[(size_t)i]);
        bool moved = false;
        for (int64_t i = j * V; i < (j + 1) * V; i++) moved |= out[(size_t)i] != base[(size_t)i];
        REQUIRE(moved);
      }
    }
  }
}

TEST_CASE("batch invariance: a sequence's logits do not depend on the rest of the batch", "[model][invariant]") {
  ModelConfig config = moas_test::tiny_config(4, 2, 16);
  Model<float> model(config);
  const int64_t Tn = 8, V = config.vocab_size;
  const auto batch = moas_test::tokens_for(8 * Tn, V, 33);
  const std::vector<float> all = eval_logits(model, batch, 8, Tn);
  for (int64_t b = 0; b < 8; b++) {
    const std::vector<int32_t> one(batch.begin() + b * Tn, batch.begin() + (b + 1) * Tn);
    const std::vector<float> alone = eval_logits(model, one, 1, Tn);
    const std::vector<float> slice(all.begin() + b * Tn * V, all.begin() + (b + 1) * Tn * V);
    REQUIRE(moas_test::close(alone, slice, 1e-5));
  }
}

TEST_CASE("determinism: same seed and data give bit-identical weights, for any thread count", "[model][invariant]") {
  ModelConfig config = moas_test::tiny_config(4, 2, 16);
  config.dropout = 0.2f;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  Model<float> first(config), second(config);
  train_steps(first, 6);
  train_steps(second, 6);
  omp_set_num_threads(1);
  Model<float> single(config);
  train_steps(single, 6);
  omp_set_num_threads(saved);
  REQUIRE(first.params.values == second.params.values);
  REQUIRE(first.params.values == single.params.values);
  Model<float> untrained(config);
  REQUIRE(first.params.values != untrained.params.values);
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
