// Decode steps read the model's weights from a copy re-laid for few-row products, made on first use. Every way the
// ABI changes weights (a parameter write, an optimizer step, a checkpoint load) must reach the next decode step: each
// case decodes once (so the copy exists), changes the weights, and must then decode the bits a fresh model holding
// the new weights decodes, which differ from the old ones.
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "api_helpers.hpp"

using namespace api_test;

namespace {

// The logits of a two-sequence decode step after a 5-position prefill, through a fresh cache.
std::vector<float> decoded(moas_model *model, const moas_model_config &c) {
  const int32_t B = 2, prompt = 5;
  moas_kv_cache *cache = nullptr;
  REQUIRE(moas_kv_cache_create(model, B, c.block_size, &cache) == MOAS_OK);
  const std::vector<int32_t> tokens = sequence((size_t)(B * prompt), c.vocab_size, 3), next = {1, 2};
  std::vector<float> logits((size_t)(B * c.vocab_size));
  REQUIRE(moas_prefill(model, cache, tokens.data(), prompt, logits.data(), logits.size()) == MOAS_OK);
  REQUIRE(moas_decode_step(model, cache, next.data(), logits.data(), logits.size()) == MOAS_OK);
  moas_kv_cache_destroy(cache);
  return logits;
}

// A model created with `c` and then given every weight of `from`.
ModelPtr copy_of(const moas_model *from, const moas_model_config &c) {
  ModelPtr copy = make_model(c);
  for (const std::string &name : parameter_names(from)) {
    const std::vector<float> values = read_param(from, name.c_str());
    REQUIRE(moas_parameter_write(copy.get(), name.c_str(), values.data(), values.size()) == MOAS_OK);
  }
  return copy;
}

}  // namespace

TEST_CASE("a decode step after the weights change uses the new weights", "[api][decode]") {
  moas_model_config c = small_config();
  c.n_kv_head = c.n_head;
  c.moas_mode = MOAS_MODE_TOP1;  // with MoAS: each branch's projections, whether or not a token chose it
  for (int32_t kind : {(int32_t)MOAS_ATTENTION_SCHEME, (int32_t)MOAS_ATTENTION_MOAS}) {
    c.attention = kind;
    ModelPtr model = make_model(c);
    const std::vector<float> before = decoded(model.get(), c);
    auto expect_new_weights = [&] {
      const std::vector<float> after = decoded(model.get(), c);
      REQUIRE(after != before);
      ModelPtr fresh = copy_of(model.get(), c);
      REQUIRE(decoded(fresh.get(), c) == after);
    };
    SECTION("parameter write, attention " + std::to_string(kind)) {
      for (const char *name : {"transformer.h.0.mlp.c_fc.weight", "transformer.wte.weight"}) {
        const std::vector<float> scaled_up = [&] {
          std::vector<float> v = read_param(model.get(), name);
          for (float &x : v) x *= 1.5f;
          return v;
        }();
        REQUIRE(moas_parameter_write(model.get(), name, scaled_up.data(), scaled_up.size()) == MOAS_OK);
      }
      expect_new_weights();
    }
    SECTION("optimizer step, attention " + std::to_string(kind)) {
      const std::vector<int32_t> tokens = sequence(32, c.vocab_size, 5), targets = sequence(32, c.vocab_size, 6);
      float loss = 0;
      REQUIRE(moas_forward(model.get(), tokens.data(), targets.data(), 2, 16, 1, &loss, nullptr) == MOAS_OK);
      REQUIRE(moas_backward(model.get()) == MOAS_OK);
      moas_adamw_config adamw;
      adamw.struct_size = sizeof adamw;
      REQUIRE(moas_adamw_config_default(&adamw) == MOAS_OK);
      adamw.lr = 1e-2f;
      REQUIRE(moas_optimizer_step(model.get(), &adamw, nullptr) == MOAS_OK);
      expect_new_weights();
    }
    SECTION("checkpoint load, attention " + std::to_string(kind)) {
      moas_model_config other = c;
      other.seed = c.seed + 1;
      ModelPtr saved = make_model(other);
      const std::string path = "decode_weights_" + std::to_string(kind) + ".safetensors";
      REQUIRE(moas_model_save(saved.get(), path.c_str(), nullptr) == MOAS_OK);
      REQUIRE(moas_model_load(model.get(), path.c_str()) == MOAS_OK);
      std::remove(path.c_str());
      expect_new_weights();
    }
  }
}
