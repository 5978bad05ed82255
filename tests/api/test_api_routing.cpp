// MoAS and MoH through the public C ABI: configs (and the impossible ones), router statistics, the load-balance
// loss in moas_forward/moas_backward, checkpoints with the reference PyTorch names, training, and decoding with a
// KV cache.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "api_helpers.hpp"

using namespace api_test;

namespace {

moas_model_config moas_cfg(int32_t mode) {
  moas_model_config c = small_config();
  c.n_kv_head = c.n_head;
  c.attention = MOAS_ATTENTION_MOAS;
  c.moas_mode = mode;
  return c;
}

moas_model_config moh_cfg(int32_t shared, int32_t active) {
  moas_model_config c = small_config();
  c.attention = MOAS_ATTENTION_MOH;
  c.head_selection.strategy = MOAS_HEADS_MIXTURE;
  c.head_selection.num_shared_heads = shared;
  c.head_selection.num_active_routed_heads = active;
  return c;
}

moas_status create_status(const moas_model_config &c) {
  moas_model *m = nullptr;
  const moas_status s = moas_model_create(&c, &m);
  moas_model_destroy(m);
  return s;
}

bool has_parameter(const moas_model *m, const std::string &name) {
  const std::vector<std::string> names = parameter_names(m);
  return std::find(names.begin(), names.end(), name) != names.end();
}

// SPEC §9 for float: max|a - b| <= 1e-5 max|b|.
bool moas_test_close(const std::vector<float> &a, const std::vector<float> &b) {
  double scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); i++) {
    scale = std::max(scale, (double)std::fabs(b[i]));
    diff = std::max(diff, (double)std::fabs(a[i] - b[i]));
  }
  return a.size() == b.size() && diff <= 1e-5 * scale;
}

void train_step(moas_model *m, uint32_t seed, float *loss, float *aux) {
  const auto tokens = sequence(2 * 16, 13, seed), targets = sequence(2 * 16, 13, seed + 1);
  REQUIRE(moas_zero_grad(m) == MOAS_OK);
  REQUIRE(moas_forward(m, tokens.data(), targets.data(), 2, 16, 1, loss, aux) == MOAS_OK);
  REQUIRE(moas_backward(m) == MOAS_OK);
}

}  // namespace

TEST_CASE("MoAS and MoH configs: defaults, and impossible settings rejected with the field named", "[api][routing]") {
  moas_model_config d;
  d.struct_size = sizeof d;
  REQUIRE(moas_model_config_default(&d) == MOAS_OK);
  REQUIRE(d.moas_mode == MOAS_MODE_SOFT);
  REQUIRE(d.moas_n_branches == 3);
  REQUIRE((d.moas_branch_kv_heads[0] == 0 && d.moas_branch_kv_heads[1] == 2 && d.moas_branch_kv_heads[2] == 1));
  REQUIRE(d.moas_aux_weight == Approx(0.01f));
  REQUIRE(d.head_selection.strategy == MOAS_HEADS_ALL);
  REQUIRE(d.head_selection.load_balance_weight == Approx(0.01f));

  struct Case {
    const char *what;
    moas_model_config config;
    const char *field;
  };
  auto edit = [](moas_model_config c, auto f) {
    f(c);
    return c;
  };
  const Case cases[] = {
      {"0 branches", edit(moas_cfg(MOAS_MODE_SOFT), [](auto &c) { c.moas_n_branches = 0; }), "moas_n_branches"},
      {"5 branches", edit(moas_cfg(MOAS_MODE_SOFT), [](auto &c) { c.moas_n_branches = 5; }), "moas_n_branches"},
      {"branch kv heads not dividing H", edit(moas_cfg(MOAS_MODE_TOP1), [](auto &c) { c.moas_branch_kv_heads[1] = 3; }),
       "moas_branch_kv_heads[1]"},
      {"negative lambda", edit(moas_cfg(MOAS_MODE_SOFT), [](auto &c) { c.moas_aux_weight = -0.1f; }),
       "moas_aux_weight"},
      {"unknown mode", edit(moas_cfg(MOAS_MODE_SOFT), [](auto &c) { c.moas_mode = 9; }), "moas_mode"},
      {"MoAS with n_kv_head", edit(moas_cfg(MOAS_MODE_SOFT), [](auto &c) { c.n_kv_head = 2; }), "n_kv_head"},
      {"h_s > H", moh_cfg(5, 0), "num_shared_heads"},
      {"K > H - h_s", moh_cfg(2, 3), "num_active_routed_heads"},
      {"K = 0 with h_s = 0", moh_cfg(0, 0), "no shared and no active routed heads"},
      {"negative load-balance weight", edit(moh_cfg(1, 1), [](auto &c) { c.head_selection.load_balance_weight = -1; }),
       "load_balance_weight"},
      {"unknown gate variant", edit(moh_cfg(1, 1), [](auto &c) { c.head_selection.gate_variant = 7; }), "gate_variant"},
      {"StaticPruning k > H", edit(moh_cfg(0, 1), [](auto &c) {
         c.head_selection.strategy = MOAS_HEADS_STATIC_PRUNING;
         c.head_selection.num_active_heads = 5;
       }),
       "num_active_heads"},
      {"StaticPruning k = 0", edit(moh_cfg(0, 1), [](auto &c) {
         c.head_selection.strategy = MOAS_HEADS_STATIC_PRUNING;
         c.head_selection.num_active_heads = 0;
       }),
       "num_active_heads"},
      {"head selection without MOAS_ATTENTION_MOH",
       edit(moh_cfg(1, 1), [](auto &c) { c.attention = MOAS_ATTENTION_SCHEME; }), "MOAS_ATTENTION_MOH"},
      {"unknown attention kind", edit(small_config(), [](auto &c) { c.attention = 3; }), "attention"},
  };
  for (const Case &k : cases) {
    DYNAMIC_SECTION(k.what) {
      REQUIRE(create_status(k.config) == MOAS_ERR_INVALID_CONFIG);
      INFO(moas_last_error());
      REQUIRE(std::string(moas_last_error()).find(k.field) != std::string::npos);
    }
  }
  // A caller built against the 0.1.0 header (struct ends before moas_mode) still creates a plain model.
  moas_model_config old = small_config();
  old.struct_size = (uint32_t)offsetof(moas_model_config, moas_mode);
  old.moas_mode = 77;  // beyond the caller's struct: never read
  REQUIRE(create_status(old) == MOAS_OK);
}

TEST_CASE("MoAS and MoH checkpoints use the reference PyTorch names and round-trip bit-exactly", "[api][routing]") {
  moas_model_config custom = moas_cfg(MOAS_MODE_TOP1);
  custom.moas_n_branches = 2;
  custom.moas_branch_kv_heads[0] = 2;
  custom.moas_branch_kv_heads[1] = 1;
  moas_model_config pruning = moh_cfg(0, 1);
  pruning.head_selection.strategy = MOAS_HEADS_STATIC_PRUNING;
  pruning.head_selection.num_active_heads = 3;
  const struct {
    const char *what;
    moas_model_config config;
    std::vector<std::string> names, absent;
  } cases[] = {
      {"MoAS soft", moas_cfg(MOAS_MODE_SOFT),
       {"transformer.h.0.attn.mha.c_attn.weight", "transformer.h.0.attn.gqa.q_proj.weight",
        "transformer.h.1.attn.gqa.k_proj.weight", "transformer.h.0.attn.mqa.v_proj.weight",
        "transformer.h.0.attn.mqa.c_proj.weight", "transformer.h.0.attn.router.0.weight",
        "transformer.h.1.attn.router.2.weight"},
       {"transformer.h.0.attn.c_attn.weight"}},
      {"MoAS static", moas_cfg(MOAS_MODE_STATIC), {"transformer.h.0.attn.gqa.c_proj.weight"},
       {"transformer.h.0.attn.router.0.weight"}},
      {"MoAS custom branches", custom, {"transformer.h.0.attn.b0.q_proj.weight", "transformer.h.0.attn.b1.v_proj.weight"},
       {"transformer.h.0.attn.mha.c_attn.weight"}},
      {"MoH 1 shared + 2 of 3", moh_cfg(1, 2),
       {"transformer.h.0.attn.q_proj.weight", "transformer.h.0.attn.wg.weight", "transformer.h.0.attn.wg_0.weight"},
       {"transformer.h.0.attn.wg_1.weight"}},
      {"MoH 2 shared + 1 of 2", moh_cfg(2, 1), {"transformer.h.1.attn.wg_1.weight", "transformer.h.1.attn.wg_0.weight"},
       {}},
      {"StaticPruning 3", pruning, {"transformer.h.0.attn.c_proj.weight"}, {"transformer.h.0.attn.wg.weight"}},
  };
  for (const auto &k : cases) {
    DYNAMIC_SECTION(k.what) {
      ModelPtr model = make_model(k.config);
      for (const std::string &name : k.names) REQUIRE(has_parameter(model.get(), name));
      for (const std::string &name : k.absent) REQUIRE_FALSE(has_parameter(model.get(), name));
      float loss, aux;
      train_step(model.get(), 3, &loss, &aux);
      moas_adamw_config adamw;
      adamw.struct_size = sizeof adamw;
      REQUIRE(moas_adamw_config_default(&adamw) == MOAS_OK);
      REQUIRE(moas_optimizer_step(model.get(), &adamw, nullptr) == MOAS_OK);

      TempDir dir;
      REQUIRE(moas_model_save(model.get(), dir.file("m.safetensors").c_str(), nullptr) == MOAS_OK);
      moas_model *loaded = nullptr;
      REQUIRE(moas_model_create_from_file(dir.file("m.safetensors").c_str(), nullptr, &loaded) == MOAS_OK);
      ModelPtr reloaded(loaded);
      REQUIRE(all_params(reloaded.get()) == all_params(model.get()));
      const auto tokens = sequence(16, 13, 9);
      REQUIRE(moas_forward(model.get(), tokens.data(), nullptr, 1, 16, 0, nullptr, nullptr) == MOAS_OK);
      REQUIRE(moas_forward(reloaded.get(), tokens.data(), nullptr, 1, 16, 0, nullptr, nullptr) == MOAS_OK);
      REQUIRE(logits_of(model.get(), 16 * 13) == logits_of(reloaded.get(), 16 * 13));
      moas_model_config back;
      back.struct_size = sizeof back;
      REQUIRE(moas_model_get_config(reloaded.get(), &back) == MOAS_OK);
      REQUIRE(back.attention == k.config.attention);
      REQUIRE(back.head_selection.strategy == k.config.head_selection.strategy);
    }
  }
}

TEST_CASE("a checkpoint of another routing setup is refused, naming the difference", "[api][routing]") {
  TempDir dir;
  ModelPtr soft = make_model(moas_cfg(MOAS_MODE_SOFT));
  REQUIRE(moas_model_save(soft.get(), dir.file("soft.safetensors").c_str(), nullptr) == MOAS_OK);
  ModelPtr top1 = make_model(moas_cfg(MOAS_MODE_TOP1));
  REQUIRE(moas_model_load(top1.get(), dir.file("soft.safetensors").c_str()) == MOAS_ERR_CHECKPOINT_CONFIG);
  REQUIRE(std::string(moas_last_error()).find("moas_mode") != std::string::npos);

  moas_model_config paper = moh_cfg(1, 2);
  paper.head_selection.gate_variant = MOAS_MOH_GATES_PAPER;
  ModelPtr reference = make_model(moh_cfg(1, 2)), paper_model = make_model(paper);
  REQUIRE(moas_model_save(paper_model.get(), dir.file("paper.safetensors").c_str(), nullptr) == MOAS_OK);
  // LESSONS.md 7: the gate variant travels with the checkpoint and a model never runs with the wrong gating.
  REQUIRE(moas_model_load(reference.get(), dir.file("paper.safetensors").c_str()) == MOAS_ERR_CHECKPOINT_CONFIG);
  REQUIRE(std::string(moas_last_error()).find("gates") != std::string::npos);
}

TEST_CASE("router statistics: shares sum to 1, balance and collapse figures, every layer at once", "[api][routing]") {
  for (int32_t mode : {MOAS_MODE_STATIC, MOAS_MODE_SOFT, MOAS_MODE_TOP1}) {
    DYNAMIC_SECTION("MoAS mode " << mode) {
      ModelPtr model = make_model(moas_cfg(mode));
      float loss, aux;
      train_step(model.get(), 1, &loss, &aux);
      if (mode == MOAS_MODE_STATIC) REQUIRE(aux == 0.0f);
      else REQUIRE(aux > 0.0f);
      moas_layer_router_stats stats[2];
      for (auto &s : stats) s.struct_size = sizeof s;
      REQUIRE(moas_router_stats_all(model.get(), stats, 2) == MOAS_OK);
      for (const auto &s : stats) {
        REQUIRE(s.n_routes == 3);
        REQUIRE(s.attention == MOAS_ATTENTION_MOAS);
        double share = 0, top = 0, gate = 0;
        for (int i = 0; i < 3; i++) share += s.share[i], top += s.top_share[i], gate += s.mean_gate[i];
        REQUIRE(share == Approx(1.0));
        REQUIRE(top == Approx(1.0));
        REQUIRE(gate == Approx(1.0));
        REQUIRE(s.balance > 1.0f / 3.0f - 1e-6f);
        REQUIRE(s.balance <= 1.0f + 1e-6f);
        REQUIRE(s.max_over_mean >= 1.0f - 1e-6f);
        REQUIRE(s.entropy > 0.0f);
        REQUIRE(s.entropy <= std::log(3.0f) + 1e-5f);
      }
      REQUIRE(stats[0].aux_loss + stats[1].aux_loss == Approx(2 * aux).epsilon(1e-5).margin(1e-9));
      moas_layer_router_stats one;
      one.struct_size = sizeof one;
      REQUIRE(moas_router_stats(model.get(), 1, &one) == MOAS_OK);
      REQUIRE(std::memcmp(&one, &stats[1], sizeof one) == 0);
      REQUIRE(moas_router_stats_all(model.get(), stats, 3) == MOAS_ERR_SIZE_MISMATCH);
    }
  }
  SECTION("MoH: shares are f_i / K, top shares f_i sum to K") {
    ModelPtr model = make_model(moh_cfg(1, 2));
    float loss, aux;
    train_step(model.get(), 2, &loss, &aux);
    REQUIRE(aux > 0.0f);
    moas_layer_router_stats s;
    s.struct_size = sizeof s;
    REQUIRE(moas_router_stats(model.get(), 0, &s) == MOAS_OK);
    REQUIRE(s.attention == MOAS_ATTENTION_MOH);
    REQUIRE(s.n_routes == 3);
    double share = 0, top = 0;
    for (int i = 0; i < 3; i++) share += s.share[i], top += s.top_share[i];
    REQUIRE(share == Approx(1.0));
    REQUIRE(top == Approx(2.0));
    REQUIRE(s.mean_shared_weight + s.mean_routed_weight == Approx(1.0));
    // An older caller's struct (ending before top_share) gets the 0.1.0 fields and nothing past them.
    unsigned char buffer[sizeof(moas_layer_router_stats)];
    std::memset(buffer, 0xCD, sizeof buffer);
    auto *old = reinterpret_cast<moas_layer_router_stats *>(buffer);
    old->struct_size = (uint32_t)offsetof(moas_layer_router_stats, top_share);
    REQUIRE(moas_router_stats(model.get(), 0, old) == MOAS_OK);
    REQUIRE(old->n_routes == 3);
    for (size_t i = offsetof(moas_layer_router_stats, top_share); i < sizeof buffer; i++) REQUIRE(buffer[i] == 0xCD);
  }
  SECTION("StaticPruning and AllHeads route nothing") {
    moas_model_config pruning = moh_cfg(0, 1);
    pruning.head_selection.strategy = MOAS_HEADS_STATIC_PRUNING;
    pruning.head_selection.num_active_heads = 2;
    ModelPtr model = make_model(pruning);
    float loss, aux;
    train_step(model.get(), 2, &loss, &aux);
    REQUIRE(aux == 0.0f);
    moas_layer_router_stats s;
    s.struct_size = sizeof s;
    REQUIRE(moas_router_stats(model.get(), 0, &s) == MOAS_ERR_NO_ROUTER);
    REQUIRE(std::string(moas_last_error()).find("StaticPruning") != std::string::npos);
  }
}

TEST_CASE("router statistics flag a collapse onto one branch", "[api][routing]") {
  moas_model_config c = moas_cfg(MOAS_MODE_SOFT);
  c.bias = 1;
  ModelPtr model = make_model(c);
  // Router output bias +30 on branch 0 in every layer: every token's gate is ~1 there.
  for (const char *name : {"transformer.h.0.attn.router.2.bias", "transformer.h.1.attn.router.2.bias"}) {
    const float bias[3] = {30.0f, 0.0f, 0.0f};
    REQUIRE(moas_parameter_write(model.get(), name, bias, 3) == MOAS_OK);
  }
  const auto tokens = sequence(2 * 16, 13, 8);
  REQUIRE(moas_forward(model.get(), tokens.data(), nullptr, 2, 16, 0, nullptr, nullptr) == MOAS_OK);
  moas_layer_router_stats s;
  s.struct_size = sizeof s;
  REQUIRE(moas_router_stats(model.get(), 1, &s) == MOAS_OK);
  REQUIRE(s.collapsed == 1);
  REQUIRE(s.balance == Approx(1.0 / 3.0).epsilon(1e-4));
  REQUIRE(s.max_over_mean == Approx(3.0).epsilon(1e-4));
  REQUIRE(s.top_share[0] == 1.0f);
  REQUIRE(s.aux_loss == Approx(2.0 / 9.0).epsilon(1e-4));  // ((2/3)^2 + 2 (1/3)^2) / 3
}

TEST_CASE("the load-balance loss is reported in training only and its weight moves the router", "[api][routing]") {
  for (moas_model_config c : {moas_cfg(MOAS_MODE_SOFT), moh_cfg(1, 2)}) {
    DYNAMIC_SECTION("attention " << c.attention) {
      const auto tokens = sequence(2 * 16, 13, 4), targets = sequence(2 * 16, 13, 5);
      ModelPtr model = make_model(c);
      float loss, aux = -1;
      REQUIRE(moas_forward(model.get(), tokens.data(), targets.data(), 2, 16, 0, &loss, &aux) == MOAS_OK);
      REQUIRE(aux == 0.0f);  // SPEC §8: no aux in eval
      // lambda = 0 versus lambda = 1: only router weights' gradients differ.
      c.moas_aux_weight = c.head_selection.load_balance_weight = 0.0f;
      ModelPtr without = make_model(c);
      c.moas_aux_weight = c.head_selection.load_balance_weight = 1.0f;
      ModelPtr with = make_model(c);
      train_step(without.get(), 4, &loss, &aux);
      train_step(with.get(), 4, &loss, &aux);
      const char *router = c.attention == MOAS_ATTENTION_MOAS ? "transformer.h.0.attn.router.0.weight"
                                                               : "transformer.h.0.attn.wg.weight";
      const char *other = "transformer.h.1.mlp.c_fc.weight";  // after every router: the loss is its only influence
      std::vector<float> g0(read_param(without.get(), router).size()), g1(g0.size());
      REQUIRE(moas_gradient_read(without.get(), router, g0.data(), g0.size()) == MOAS_OK);
      REQUIRE(moas_gradient_read(with.get(), router, g1.data(), g1.size()) == MOAS_OK);
      REQUIRE(g0 != g1);
      std::vector<float> m0(read_param(without.get(), other).size()), m1(m0.size());
      REQUIRE(moas_gradient_read(without.get(), other, m0.data(), m0.size()) == MOAS_OK);
      REQUIRE(moas_gradient_read(with.get(), other, m1.data(), m1.size()) == MOAS_OK);
      REQUIRE(m0 == m1);
    }
  }
}

TEST_CASE("top-1 MoAS and MoH models learn the copy task", "[api][routing][learning]") {
  moas_model_config top1 = moas_cfg(MOAS_MODE_TOP1), moh = moh_cfg(1, 2);
  for (moas_model_config c : {top1, moh}) {
    DYNAMIC_SECTION("attention " << c.attention) {
      c.vocab_size = 10;
      c.n_embd = 64;
      c.n_head = 4;
      c.moas_branch_kv_heads[0] = 0;
      ModelPtr model = make_model(c);
      const auto [first, last] = train_copy_task(model.get(), 300, 177);
      INFO("loss " << first << " -> " << last);
      REQUIRE(first > 2.0f);
      REQUIRE(last < 0.3f);
    }
  }
}

TEST_CASE("decoding through the C ABI: cache lifecycle, logits of a full forward, errors", "[api][decode]") {
  moas_model_config windowed = small_config();
  windowed.window_size = 2;  // a ring buffer of 5 rows for 10 positions
  for (moas_model_config c : {small_config(), moas_cfg(MOAS_MODE_TOP1), moh_cfg(1, 2), windowed}) {
    DYNAMIC_SECTION("attention " << c.attention) {
      ModelPtr model = make_model(c);
      const int32_t B = 2, Tn = 10, V = c.vocab_size;
      const auto tokens = sequence((size_t)(B * Tn), V, 21);
      REQUIRE(moas_forward(model.get(), tokens.data(), nullptr, B, Tn, 0, nullptr, nullptr) == MOAS_OK);
      const auto full = logits_of(model.get(), (size_t)(B * Tn * V));

      moas_kv_cache *raw = nullptr;
      REQUIRE(moas_kv_cache_create(model.get(), B, c.block_size + 1, &raw) == MOAS_ERR_SIZE_MISMATCH);
      REQUIRE(raw == nullptr);
      REQUIRE(moas_kv_cache_create(model.get(), B, Tn, &raw) == MOAS_OK);
      std::unique_ptr<moas_kv_cache, void (*)(moas_kv_cache *)> cache(raw, moas_kv_cache_destroy);
      uint64_t bytes = 0;
      REQUIRE(moas_kv_cache_bytes_per_token(cache.get(), &bytes) == MOAS_OK);
      REQUIRE(bytes > 0);

      std::vector<int32_t> prompt;
      for (int32_t b = 0; b < B; b++) prompt.insert(prompt.end(), tokens.begin() + b * Tn, tokens.begin() + b * Tn + 4);
      std::vector<float> last((size_t)(B * V));
      REQUIRE(moas_prefill(model.get(), cache.get(), prompt.data(), 4, last.data(), last.size() - 1) ==
              MOAS_ERR_SIZE_MISMATCH);
      int32_t length = -1;
      REQUIRE(moas_kv_cache_length(cache.get(), &length) == MOAS_OK);
      REQUIRE(length == 0);  // a failed call leaves the cache as it was
      REQUIRE(moas_prefill(model.get(), cache.get(), prompt.data(), 4, last.data(), last.size()) == MOAS_OK);
      auto expect_position = [&](const std::vector<float> &got, int32_t t) {
        std::vector<float> want;
        for (int32_t b = 0; b < B; b++)
          want.insert(want.end(), full.begin() + ((size_t)b * Tn + t) * V, full.begin() + ((size_t)b * Tn + t + 1) * V);
        INFO("position " << t);
        REQUIRE(moas_test_close(got, want));
      };
      expect_position(last, 3);
      for (int32_t t = 4; t < Tn; t++) {
        const int32_t step[2] = {tokens[(size_t)t], tokens[(size_t)(Tn + t)]};
        REQUIRE(moas_decode_step(model.get(), cache.get(), step, last.data(), last.size()) == MOAS_OK);
        expect_position(last, t);
      }
      const int32_t more[2] = {1, 2};
      REQUIRE(moas_decode_step(model.get(), cache.get(), more, last.data(), last.size()) == MOAS_ERR_CONTEXT_FULL);
      REQUIRE(std::string(moas_last_error()).find("reset") != std::string::npos);
      REQUIRE(moas_kv_cache_reset(cache.get()) == MOAS_OK);
      const int32_t bad[2] = {1, V};
      REQUIRE(moas_decode_step(model.get(), cache.get(), bad, last.data(), last.size()) == MOAS_ERR_TOKEN_OUT_OF_RANGE);
      REQUIRE(moas_decode_step(model.get(), cache.get(), more, last.data(), last.size()) == MOAS_OK);
      REQUIRE(moas_decode_step(nullptr, cache.get(), more, last.data(), last.size()) == MOAS_ERR_NULL_ARGUMENT);
      moas_kv_cache_destroy(nullptr);
    }
  }
  // A cache laid out for another architecture is refused.
  ModelPtr mha = make_model(small_config());
  moas_model_config other = small_config();
  other.n_kv_head = 1;
  ModelPtr mqa = make_model(other);
  moas_kv_cache *raw = nullptr;
  REQUIRE(moas_kv_cache_create(mha.get(), 1, 4, &raw) == MOAS_OK);
  const int32_t one = 1;
  REQUIRE(moas_decode_step(mqa.get(), raw, &one, nullptr, 0) == MOAS_ERR_SIZE_MISMATCH);
  moas_kv_cache_destroy(raw);
}

TEST_CASE("routers driven to overflow give MOAS_ERR_NON_FINITE and the model recovers", "[api][routing][errors]") {
  for (moas_model_config c : {moas_cfg(MOAS_MODE_TOP1), moh_cfg(1, 2)}) {
    DYNAMIC_SECTION("attention " << c.attention) {
      ModelPtr model = make_model(c);
      const char *router = c.attention == MOAS_ATTENTION_MOAS ? "transformer.h.0.attn.router.0.weight"
                                                               : "transformer.h.0.attn.wg.weight";
      const std::vector<float> saved = read_param(model.get(), router);
      std::vector<float> huge(saved.size());
      for (size_t i = 0; i < huge.size(); i++) huge[i] = (i % 2 ? -3e38f : 3e38f);
      REQUIRE(moas_parameter_write(model.get(), router, huge.data(), huge.size()) == MOAS_OK);
      const auto tokens = sequence(2 * 16, 13, 6), targets = sequence(2 * 16, 13, 7);
      float loss = 0;
      REQUIRE(moas_forward(model.get(), tokens.data(), targets.data(), 2, 16, 1, &loss, nullptr) ==
              MOAS_ERR_NON_FINITE);
      REQUIRE(moas_backward(model.get()) == MOAS_ERR_NO_FORWARD);
      REQUIRE(moas_parameter_write(model.get(), router, saved.data(), saved.size()) == MOAS_OK);
      float aux = 0;
      train_step(model.get(), 8, &loss, &aux);
      REQUIRE(std::isfinite(loss));
    }
  }
}

TEST_CASE("a model's per-token gates, layer by layer", "[api][routing]") {
  moas_model_config cfg = small_config();
  cfg.attention = MOAS_ATTENTION_MOAS;
  cfg.n_kv_head = cfg.n_head;
  ModelPtr model = make_model(cfg);
  int32_t width = -1;
  CHECK(moas_gates(model.get(), 0, nullptr, 0, &width) == MOAS_ERR_NO_FORWARD);
  const auto tokens = sequence(2 * 8, 13, 21);
  REQUIRE(moas_forward(model.get(), tokens.data(), nullptr, 2, 8, 0, nullptr, nullptr) == MOAS_OK);
  CHECK(moas_gates(model.get(), 2, nullptr, 0, &width) == MOAS_ERR_INDEX_OUT_OF_RANGE);
  REQUIRE(moas_gates(model.get(), 1, nullptr, 0, &width) == MOAS_OK);
  REQUIRE(width == 3);  // the default MHA, GQA and MQA branches
  std::vector<float> gates(2 * 8 * 3);
  CHECK(moas_gates(model.get(), 1, gates.data(), gates.size() - 1, &width) == MOAS_ERR_SIZE_MISMATCH);
  REQUIRE(moas_gates(model.get(), 1, gates.data(), gates.size(), &width) == MOAS_OK);
  for (size_t row = 0; row < 16; row++)  // soft routing: a softmax over the branches per token
    CHECK(gates[3 * row] + gates[3 * row + 1] + gates[3 * row + 2] == Approx(1.0f).margin(1e-5));
  ModelPtr scheme = make_model(small_config());
  REQUIRE(moas_forward(scheme.get(), tokens.data(), nullptr, 2, 8, 0, nullptr, nullptr) == MOAS_OK);
  REQUIRE(moas_gates(scheme.get(), 0, nullptr, 0, &width) == MOAS_OK);
  CHECK(width == 0);
}
