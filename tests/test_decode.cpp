// Decoding with the KV cache (SPEC §5, §6.6): prefill plus one token at a time gives the logits of a full forward
// over the prefix, for every attention kind (one scheme, each MoAS mode, each MoH strategy), with CoPE and sliding
// windows (SPEC §7), in double.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "model.hpp"
#include "model_fixtures.hpp"

using namespace moas;

namespace {

// Rows [t0, t1) of every sequence of a [B, Tn] token matrix.
std::vector<int32_t> columns(const std::vector<int32_t> &tokens, int64_t B, int64_t Tn, int64_t t0, int64_t t1) {
  std::vector<int32_t> out;
  for (int64_t b = 0; b < B; b++) out.insert(out.end(), tokens.begin() + b * Tn + t0, tokens.begin() + b * Tn + t1);
  return out;
}

}  // namespace

TEST_CASE("KV-cache decoding equals the full forward for every attention kind (SPEC §6.6)", "[decode]") {
  auto configs = moas_test::option_configs();
  for (auto &routed : moas_test::routed_configs()) configs.push_back(routed);
  for (auto &positions : moas_test::position_configs()) configs.push_back(positions);
  for (const auto &[name, config] : configs) {
    DYNAMIC_SECTION(name) {
      Model<double> model(config);
      moas_test::randomise_cope_embeddings(model.params);
      // Routers far from uniform: decisions with margins far above rounding differences between the two paths.
      for (const ParamInfo &info : model.params.infos())
        if (info.name.find(".router.") != std::string::npos || info.name.find(".wg") != std::string::npos)
          for (int64_t i = 0; i < info.numel; i++) model.params.values[(size_t)(info.offset + i)] *= 40.0;
      const int64_t B = 2, Tn = config.block_size, V = config.vocab_size, prompt = 3;
      const auto tokens = moas_test::tokens_for(B * Tn, V, 17);
      model.forward(tokens.data(), nullptr, B, Tn, false);
      const std::vector<double> full = model.logits();

      KvCache<double> cache;
      model.allocate_cache(&cache, B, Tn);
      const auto first = columns(tokens, B, Tn, 0, prompt);
      model.forward(first.data(), nullptr, B, prompt, false, &cache);
      REQUIRE(cache.length == prompt);
      for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < prompt; t++)
          for (int64_t v = 0; v < V; v++)
            REQUIRE(model.logits()[(size_t)((b * prompt + t) * V + v)] ==
                    Approx(full[(size_t)((b * Tn + t) * V + v)]).epsilon(1e-9).margin(1e-12));
      for (int64_t t = prompt; t < Tn; t++) {
        const auto step = columns(tokens, B, Tn, t, t + 1);
        model.forward(step.data(), nullptr, B, 1, false, &cache);
        for (int64_t b = 0; b < B; b++)
          for (int64_t v = 0; v < V; v++) {
            INFO("position " << t << " sequence " << b);
            REQUIRE(model.logits()[(size_t)(b * V + v)] ==
                    Approx(full[(size_t)((b * Tn + t) * V + v)]).epsilon(1e-9).margin(1e-12));
          }
      }
      REQUIRE(cache.length == Tn);
    }
  }
}

TEST_CASE("the cache holds only each scheme's kv heads", "[decode]") {
  const int64_t d = 4, L = 2;  // width 16, 4 heads
  auto bytes = [](const ModelConfig &c) {
    Model<float> model(c);
    KvCache<float> cache;
    model.allocate_cache(&cache, 1, 8);
    return cache.bytes_per_token();
  };
  REQUIRE(bytes(moas_test::tiny_config(4, 4, 16)) == (uint64_t)(L * 2 * 4 * d * 4));
  REQUIRE(bytes(moas_test::tiny_config(4, 2, 16)) == (uint64_t)(L * 2 * 2 * d * 4));
  REQUIRE(bytes(moas_test::tiny_config(4, 1, 16)) == (uint64_t)(L * 2 * 1 * d * 4));
  // MoAS: every branch's kv heads (4 + 2 + 1); StaticPruning 1 of 4 with GQA 4/2: only kv head 0.
  REQUIRE(bytes(moas_test::moas_config(MoasMode::Top1, {4, 2, 1})) == (uint64_t)(L * 2 * 7 * d * 4));
  REQUIRE(bytes(moas_test::static_pruning_config(4, 2, 16, 1)) == (uint64_t)(L * 2 * 1 * d * 4));
}
