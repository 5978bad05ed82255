// MoAS (SPEC §3) and MoH (SPEC §4) on the CPU backend: finite-difference gradients of whole models through
// routers, gates, load-balance losses and every branch/head (asserting that no routing decision flips between the
// evaluations, SPEC §9); the equivalences of SPEC §6.1-6.2 at block level; the load-balance formulas; and the
// per-token routing arithmetic the CUDA kernels share.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "attention/attention_block.hpp"
#include "attention/attention_math.hpp"
#include "attention/balance_loss.hpp"
#include "attention/moh_gates.hpp"
#include "attention/routing.hpp"
#include "gradcheck.hpp"
#include "model/model.hpp"
#include "model/model_fixtures.hpp"
#include "model/model_gradcheck.hpp"

using namespace moas;

namespace {

// A float block and its tensors, for block-level equivalences.
struct Block {
  ParamTable<float> params;
  std::unique_ptr<AttentionBlock<float>> block;
  explicit Block(const ModelConfig &c) {
    block = make_attention_block<float>(c, params, "attn.");
    params.allocate();
    for (const ParamInfo &info : params.infos())
      init_normal(params.values.data() + info.offset, info.numel, 0.3, 11, (uint64_t)info.offset);
  }
  float *tensor(const std::string &name) { return params.values.data() + params.find(name).offset; }
  void copy_from(Block &other, const std::string &from_prefix, const std::string &to_prefix) {
    for (const ParamInfo &info : params.infos()) {
      if (info.name.rfind(to_prefix, 0) != 0) continue;
      const std::string source = from_prefix + info.name.substr(to_prefix.size());
      std::copy_n(other.tensor(source), info.numel, tensor(info.name));
    }
  }
  std::vector<float> run(const std::vector<float> &x, int64_t B, int64_t Tn, int64_t C) {
    RowSet all;
    all.set_all(B, Tn);
    BlockContext<float> ctx;
    ctx.batch = B;
    ctx.seq = Tn;
    ctx.all_rows = &all;
    std::vector<float> y((size_t)(B * Tn * C));
    block->forward(params, x.data(), y.data(), ctx, false);
    return y;
  }
};

std::vector<float> random_input(int64_t n, uint64_t seed) {
  std::vector<float> x((size_t)n);
  init_normal(x.data(), n, 1.0, seed, 3);
  return x;
}

}  // namespace

TEST_CASE("routed models: every parameter gradient matches finite differences, no routing decision flips",
          "[routing][gradcheck]") {
  for (const auto &[name, config] : moas_test::routed_configs()) {
    DYNAMIC_SECTION(name) { moas_test::check_model_gradients(config, 2, 6); }
  }
}

TEST_CASE("MoH groups large enough for the gathered-weight products: gradients and AllHeads equivalence",
          "[routing][gradcheck]") {
  // 4 x 64 tokens over 3 head pairs: every routing group holds more than kWideGroup tokens.
  ModelConfig config = moas_test::moh_config(4, 2, 16, 1, 2);
  config.block_size = 64;
  moas_test::check_model_gradients(config, 4, 64);

  const int64_t B = 8, Tn = 64, C = 24, H = 6;
  const auto x = random_input(B * Tn * C, 9);
  ModelConfig all_config = moas_test::tiny_config(H, 3, C);
  all_config.block_size = Tn;
  Block all(all_config);
  ModelConfig mix_config = moas_test::moh_config(H, 3, C, 2, 4);
  mix_config.block_size = Tn;
  Block mixture(mix_config);  // zero routers: every token in one group of all routed heads, gates 1
  for (const ParamInfo &info : mixture.params.infos()) {
    if (moas_test::is_router_weight(info.name)) std::fill_n(mixture.tensor(info.name), info.numel, 0.0f);
    else std::copy_n(all.tensor(info.name), info.numel, mixture.tensor(info.name));
  }
  REQUIRE(moas_test::close(mixture.run(x, B, Tn, C), all.run(x, B, Tn, C), 1e-5));
}

TEST_CASE("MoH: a sequence projected alone (whole projections) equals it inside a batch (grouped products)",
          "[routing][invariant]") {
  // E = 3 routed heads choose 2: at most 3 head sets. One sequence of 64 tokens has fewer than kWideGroup per set
  // and takes the whole-projection path; 8 of them together exceed it and take the grouped products.
  const int64_t B = 8, Tn = 64, C = 24, H = 6;
  ModelConfig config = moas_test::moh_config(H, 3, C, 3, 2);
  config.block_size = Tn;
  Block moh(config);
  const auto x = random_input(B * Tn * C, 12);
  const std::vector<float> batch = moh.run(x, B, Tn, C);
  for (int64_t b = 0; b < B; b++) {
    const std::vector<float> one(x.begin() + b * Tn * C, x.begin() + (b + 1) * Tn * C);
    const std::vector<float> alone = moh.run(one, 1, Tn, C);
    INFO("sequence " << b);
    REQUIRE(moas_test::close(alone, std::vector<float>(batch.begin() + b * Tn * C, batch.begin() + (b + 1) * Tn * C),
                             1e-5));
  }
}

TEST_CASE("MoAS soft or top1 with the router forced one-hot on branch k equals branch k alone (SPEC §6.1)",
          "[routing][invariant]") {
  const int64_t B = 2, Tn = 9, C = 16;
  const std::vector<int64_t> branches{4, 2, 1};
  const char *names[] = {"mha", "gqa", "mqa"};
  for (MoasMode mode : {MoasMode::Soft, MoasMode::Top1})
    for (int64_t k = 0; k < 3; k++) {
      DYNAMIC_SECTION((mode == MoasMode::Soft ? "soft" : "top1") << " branch " << names[k]) {
        ModelConfig c = moas_test::moas_config(mode, branches);
        c.bias = true;
        Block mixture(c);
        // W2 = 0 and a bias of 200 on branch k: softmax gives exactly 1 there and exactly 0 elsewhere in float.
        const ParamInfo &w2 = mixture.params.find("attn.router.2.weight");
        std::fill_n(mixture.tensor("attn.router.2.weight"), w2.numel, 0.0f);
        float *b2 = mixture.tensor("attn.router.2.bias");
        for (int64_t j = 0; j < 3; j++) b2[j] = j == k ? 200.0f : 0.0f;
        ModelConfig alone_config = moas_test::tiny_config(4, branches[(size_t)k], C);
        alone_config.bias = true;
        Block alone(alone_config);
        alone.copy_from(mixture, std::string("attn.") + names[k] + ".", "attn.");
        const auto x = random_input(B * Tn * C, 5);
        REQUIRE(moas_test::close(mixture.run(x, B, Tn, C), alone.run(x, B, Tn, C), 1e-6));
      }
    }
}

TEST_CASE("MoAS static equals the average of its branches alone (SPEC §6.1)", "[routing][invariant]") {
  const int64_t B = 2, Tn = 9, C = 24;
  const std::vector<int64_t> branches{3, 1};
  Block mixture(moas_test::moas_config(MoasMode::Static, branches, 6, C));
  const auto x = random_input(B * Tn * C, 6);
  std::vector<float> average((size_t)(B * Tn * C), 0.0f);
  for (size_t k = 0; k < branches.size(); k++) {
    Block alone(moas_test::tiny_config(6, branches[k], C));
    alone.copy_from(mixture, "attn.b" + std::to_string(k) + ".", "attn.");
    const auto y = alone.run(x, B, Tn, C);
    for (size_t i = 0; i < y.size(); i++) average[i] += y[i] / (float)branches.size();
  }
  REQUIRE(moas_test::close(mixture.run(x, B, Tn, C), average, 1e-5));
}

TEST_CASE("MoH equivalences with AllHeads (SPEC §6.2)", "[routing][invariant]") {
  const int64_t B = 2, Tn = 9, C = 24, H = 6;
  for (int64_t kv : {6, 3, 1}) {
    DYNAMIC_SECTION("kv heads " << kv) {
      const auto x = random_input(B * Tn * C, 7);
      Block all(moas_test::tiny_config(H, kv, C));
      const auto reference = all.run(x, B, Tn, C);

      Block pruned(moas_test::static_pruning_config(H, kv, C, H));  // StaticPruning{H} == AllHeads
      pruned.copy_from(all, "attn.", "attn.");
      REQUIRE(moas_test::close(pruned.run(x, B, Tn, C), reference, 1e-5));

      // Zero router weights: uniform routing with K = E activates every head with gate exactly 1.
      for (int64_t shared : {0, 1, 2}) {
        Block mixture(moas_test::moh_config(H, kv, C, shared, H - shared));
        for (const ParamInfo &info : mixture.params.infos()) {
          if (moas_test::is_router_weight(info.name)) std::fill_n(mixture.tensor(info.name), info.numel, 0.0f);
          else std::copy_n(all.tensor(info.name), info.numel, mixture.tensor(info.name));
        }
        INFO("shared heads " << shared);
        REQUIRE(moas_test::close(mixture.run(x, B, Tn, C), reference, 1e-5));
      }
    }
  }
}

TEST_CASE("MoH activates exactly h_s + K heads per token; StaticPruning exactly heads 0..k-1", "[routing]") {
  const int64_t B = 3, Tn = 8, C = 24, H = 6;
  const auto x = random_input(B * Tn * C, 8);
  for (int64_t shared : {0, 1, 2})
    for (int64_t active : {1, 2, 3}) {
      Block moh(moas_test::moh_config(H, 2, C, shared, active));
      moh.run(x, B, Tn, C);
      int64_t width = 0;
      const std::vector<float> gates = moh.block->gates(&width);
      REQUIRE(width == H);
      for (int64_t n = 0; n < B * Tn; n++) {
        int64_t count = 0;
        for (int64_t h = 0; h < H; h++) count += gates[(size_t)(n * H + h)] != 0.0f;
        for (int64_t h = 0; h < shared; h++) REQUIRE(gates[(size_t)(n * H + h)] > 0.0f);
        REQUIRE(count == shared + active);
      }
    }
  for (int64_t k = 1; k <= H; k++) {
    Block pruned(moas_test::static_pruning_config(H, 3, C, k));
    pruned.run(x, B, Tn, C);
    int64_t width = 0;
    const std::vector<float> gates = pruned.block->gates(&width);
    for (int64_t n = 0; n < B * Tn; n++)
      for (int64_t h = 0; h < H; h++) REQUIRE(gates[(size_t)(n * H + h)] == (h < k ? 1.0f : 0.0f));
  }
}

TEST_CASE("load-balance losses: zero (MoAS) or K (MoH) at perfect balance, hand-computed values otherwise",
          "[routing][balance]") {
  std::vector<double> mean, P, f;
  const std::vector<float> uniform(8 * 4, 0.25f);
  REQUIRE(moas_balance_loss(uniform.data(), 8, 4, &mean) == 0.0);
  // Two tokens, both entirely on branch 0 of 2: means (1, 0), loss ((1/2)^2 + (1/2)^2) / 2.
  const std::vector<double> collapsed{1, 0, 1, 0};
  REQUIRE(moas_balance_loss(collapsed.data(), 2, 2, &mean) == Approx(0.25));
  REQUIRE(mean == std::vector<double>{1.0, 0.0});
  const std::vector<double> skewed{0.7, 0.3, 0.6, 0.4};  // means (0.65, 0.35): ((0.15)^2 * 2) / 2
  REQUIRE(moas_balance_loss(skewed.data(), 2, 2, &mean) == Approx(0.0225));

  // MoH, E = 4, K = 2, uniform softmax and every head selected by half the tokens: E * sum (1/4)(1/2) = 2 = K.
  const std::vector<double> r_uniform(4 * 4, 0.25);
  const std::vector<uint8_t> rotating{1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1};
  REQUIRE(moh_balance_loss(r_uniform.data(), rotating.data(), 4, 4, &P, &f) == Approx(2.0));
  REQUIRE(f == std::vector<double>{0.5, 0.5, 0.5, 0.5});
  // E = 2, K = 1: r = (0.7, 0.3), (0.6, 0.4), both pick head 0: P = (0.65, 0.35), f = (1, 0), loss 2 * 0.65.
  const std::vector<double> r{0.7, 0.3, 0.6, 0.4};
  const std::vector<uint8_t> both_first{1, 0, 1, 0}, split{1, 0, 0, 1};
  const double imbalanced = moh_balance_loss(r.data(), both_first.data(), 2, 2, &P, &f);
  REQUIRE(imbalanced == Approx(1.3));
  // P comes from the full softmax, not only the selected entries (LESSONS.md 4): head 1's P is 0.35, not 0.
  REQUIRE(P[1] == Approx(0.35));
  REQUIRE(moh_balance_loss(r.data(), split.data(), 2, 2, &P, &f) < imbalanced);
}

TEST_CASE("MoH gate arithmetic: uniform routing gives gates of 1; backward matches finite differences",
          "[routing][gradcheck]") {
  const MohGateSpec ref{2, 4, 2, true}, paper{2, 4, 2, false};
  const std::vector<double> r_uniform(4, 0.25), s_uniform(2, 0.5), a_uniform{0.5, 0.5};
  const uint8_t first_two[4] = {1, 1, 0, 0};
  double gate[6];
  moh_gates_token(ref, r_uniform.data(), first_two, s_uniform.data(), a_uniform.data(), gate);
  for (int i = 0; i < 4; i++) REQUIRE(gate[i] == Approx(1.0));
  REQUIRE(gate[4] == 0.0);
  REQUIRE(gate[5] == 0.0);
  moh_gates_token(paper, r_uniform.data(), first_two, s_uniform.data(), a_uniform.data(), gate);
  REQUIRE(gate[0] == Approx(0.25));  // a1 s_0
  REQUIRE(gate[2] == Approx(0.125));  // a2 r_0

  for (const MohGateSpec &spec : {ref, paper}) {
    std::vector<double> r{0.4, 0.3, 0.2, 0.1}, s{0.6, 0.4}, a{0.3, 0.7};
    const uint8_t selected[4] = {1, 0, 1, 0};
    const auto weights = moas_test::random_vector(6, 99);
    auto loss = [&] {
      double g[6];
      moh_gates_token(spec, r.data(), selected, s.data(), a.data(), g);
      double sum = 0;
      for (int i = 0; i < 6; i++) sum += g[i] * weights[(size_t)i];
      return sum;
    };
    std::vector<double> dr(4), ds(2), da(2);
    moh_gates_token_backward(spec, r.data(), selected, s.data(), a.data(), weights.data(), dr.data(), ds.data(),
                             da.data());
    moas_test::check_gradient("dr", r.data(), 4, dr.data(), loss);
    moas_test::check_gradient("ds", s.data(), 2, ds.data(), loss);
    moas_test::check_gradient("da", a.data(), 2, da.data(), loss);
  }
}

TEST_CASE("routing decisions break ties toward the lower index", "[routing]") {
  const float tied[5] = {0.1f, 0.3f, 0.3f, 0.2f, 0.3f};
  REQUIRE(argmax_lower(tied, 5) == 1);
  uint8_t selected[5];
  top_k_lower(tied, 5, 2, selected);
  REQUIRE(std::vector<uint8_t>(selected, selected + 5) == std::vector<uint8_t>{0, 1, 1, 0, 0});
  top_k_lower(tied, 5, 4, selected);
  REQUIRE(std::vector<uint8_t>(selected, selected + 5) == std::vector<uint8_t>{0, 1, 1, 1, 1});
  top_k_lower(tied, 5, 0, selected);
  REQUIRE(std::vector<uint8_t>(selected, selected + 5) == std::vector<uint8_t>{0, 0, 0, 0, 0});
}

TEST_CASE("query chunks: dense rows in tiles, routed rows split where their positions cross a tile", "[routing]") {
  std::vector<int32_t> dense(150);
  for (int32_t i = 0; i < 150; i++) dense[(size_t)i] = i;
  CHECK(moas::query_chunk_end(dense.data(), 0, 150, 64) == 64);
  CHECK(moas::query_chunk_end(dense.data(), 64, 150, 64) == 128);
  CHECK(moas::query_chunk_end(dense.data(), 128, 150, 64) == 150);
  // A routed head's rows: positions 3, 40, 63 | 64, 90 | 200. A chunk never spans two bands of 64 positions.
  const std::vector<int32_t> routed{3, 40, 63, 64, 90, 200};
  CHECK(moas::query_chunk_end(routed.data(), 0, 6, 64) == 3);
  CHECK(moas::query_chunk_end(routed.data(), 3, 6, 64) == 5);
  CHECK(moas::query_chunk_end(routed.data(), 5, 6, 64) == 6);
}

TEST_CASE("online softmax tile update equals a full softmax over the visible keys", "[attention][math]") {
  // Three tiles of 4 keys for a query at position 9: keys 0..9 visible, 10 and 11 masked.
  const std::vector<double> scores = moas_test::random_vector(12, 5, 3.0);
  double m = negative_infinity<double>(), l = 0;
  std::vector<double> acc_weights(12, 0.0);  // the accumulated weight of each key, rescaled like the accumulator
  for (int64_t j0 = 0; j0 < 12; j0 += 4) {
    std::vector<double> tile(scores.begin() + j0, scores.begin() + j0 + 4);
    int64_t lo, hi;
    visible_keys(9, 0, j0, 4, &lo, &hi);
    const double alpha = online_softmax_update(tile.data(), lo, hi, 4, m, l);
    for (int64_t j = 0; j < j0; j++) acc_weights[(size_t)j] *= alpha;
    for (int64_t c = 0; c < 4; c++) acc_weights[(size_t)(j0 + c)] = tile[(size_t)c];
  }
  double mx = scores[0], sum = 0;
  for (int j = 0; j <= 9; j++) mx = std::max(mx, scores[(size_t)j]);
  for (int j = 0; j <= 9; j++) sum += std::exp(scores[(size_t)j] - mx);
  REQUIRE(m + std::log(l) == Approx(mx + std::log(sum)).epsilon(1e-14));
  for (int j = 0; j < 12; j++) {
    const double expected = j <= 9 ? std::exp(scores[(size_t)j] - mx) / sum : 0.0;
    REQUIRE(acc_weights[(size_t)j] / l == Approx(expected).epsilon(1e-12).margin(1e-300));
  }
  // A tile entirely in the future leaves the running state alone.
  std::vector<double> future(4, 1.0);
  int64_t lo, hi;
  visible_keys(3, 0, 4, 4, &lo, &hi);
  REQUIRE(hi <= lo);
  const double m_before = m, l_before = l;
  REQUIRE(online_softmax_update(future.data(), lo, hi, 4, m, l) == 1.0);
  REQUIRE((m == m_before && l == l_before));
  REQUIRE(future == std::vector<double>(4, 0.0));
  // A window of 3 for the query at 9: keys 6 .. 9, so columns 2 and 3 of the tile at 4 and nothing of the tile at 0.
  visible_keys(9, 3, 4, 4, &lo, &hi);
  REQUIRE((lo == 2 && hi == 4));
  visible_keys(9, 3, 0, 4, &lo, &hi);
  REQUIRE(hi <= lo);
  REQUIRE(first_visible_key(9, 3) == 6);
  REQUIRE(first_visible_key(2, 3) == 0);
  REQUIRE(first_visible_key(9, 0) == 0);
  REQUIRE(kv_head_of(11, 3) == 3);  // H = 12, Hkv = 4
  REQUIRE(kv_head_of(5, 6) == 0);   // MQA: every head reads kv head 0
}

namespace {

// What a layer's router statistics must say about the gates of the forward that produced them (SPEC §8), computed
// here from the gates alone; the MoH load-balance loss and MoAS aux_loss are checked against the model's.
void check_stats_match_gates(const ModelConfig &config, const RouterStats &st, const std::vector<float> &gates,
                             int64_t width) {
  const int64_t N = (int64_t)gates.size() / width;
  if (config.attention == AttentionKind::Moas) {
    const int64_t S = width;
    REQUIRE(st.attention == MOAS_ATTENTION_MOAS);
    std::vector<double> mean((size_t)S, 0.0), top((size_t)S, 0.0);
    double entropy = 0;
    for (int64_t n = 0; n < N; n++) {
      top[(size_t)argmax_lower(gates.data() + n * S, S)] += 1.0 / (double)N;
      for (int64_t k = 0; k < S; k++) {
        const double g = gates[(size_t)(n * S + k)];
        mean[(size_t)k] += g / (double)N;
        entropy -= g * std::log(g) / (double)N;
      }
    }
    if (config.moas.mode == MoasMode::Static) top = mean;
    double aux = 0;
    for (int64_t k = 0; k < S; k++) aux += std::pow(mean[(size_t)k] - 1.0 / (double)S, 2) / (double)S;
    const std::vector<double> &share = config.moas.mode == MoasMode::Top1 ? top : mean;
    for (int64_t k = 0; k < S; k++) {
      REQUIRE(st.mean_gate[(size_t)k] == Approx(mean[(size_t)k]).epsilon(1e-6));
      REQUIRE(st.top_share[(size_t)k] == Approx(top[(size_t)k]).epsilon(1e-6));
      REQUIRE(st.share[(size_t)k] == Approx(share[(size_t)k]).epsilon(1e-6));
    }
    REQUIRE(st.entropy == Approx(entropy).epsilon(1e-5));
    REQUIRE(st.aux_loss == Approx(config.moas.mode == MoasMode::Static ? 0.0 : aux).epsilon(1e-5).margin(1e-12));
    return;
  }
  const int64_t H = width, E = H - config.heads.num_shared_heads, K = config.heads.num_active_routed_heads;
  REQUIRE(st.attention == MOAS_ATTENTION_MOH);
  for (int64_t i = 0; i < E; i++) {
    double mean = 0, selected = 0;
    for (int64_t n = 0; n < N; n++) {
      const float g = gates[(size_t)(n * H + H - E + i)];
      mean += (double)g / (double)N;
      selected += g > 0.0f ? 1.0 / (double)N : 0.0;
    }
    REQUIRE(st.mean_gate[(size_t)i] == Approx(mean).epsilon(1e-6));
    REQUIRE(st.top_share[(size_t)i] == Approx(selected).epsilon(1e-6));
    REQUIRE(st.share[(size_t)i] == Approx(selected / (double)K).epsilon(1e-6));
  }
}

bool same_stats(const RouterStats &a, const RouterStats &b) {
  return a.attention == b.attention && a.share == b.share && a.mean_gate == b.mean_gate &&
         a.top_share == b.top_share && a.entropy == b.entropy && a.aux_loss == b.aux_loss &&
         a.mean_shared_weight == b.mean_shared_weight && a.mean_routed_weight == b.mean_routed_weight;
}

}  // namespace

TEST_CASE("router statistics describe the last forward whenever they are read: after its backward, after eval",
          "[routing]") {
  const int64_t B = 3, Tn = 8;
  for (const auto &[name, config] : moas_test::routed_configs()) {
    if (config.attention == AttentionKind::Moh && config.heads.strategy != HeadStrategy::MixtureOfHeads) continue;
    DYNAMIC_SECTION(name) {
      Model<float> model(config);
      const std::vector<int32_t> a = moas_test::tokens_for(B * Tn, config.vocab_size, 1);
      const std::vector<int32_t> b = moas_test::tokens_for(B * Tn, config.vocab_size, 2);
      const int64_t L = config.n_layer;
      auto stats = [&] {
        std::vector<RouterStats> all((size_t)L);
        for (int64_t l = 0; l < L; l++) REQUIRE(model.router_stats(l, &all[(size_t)l]));
        return all;
      };
      auto check_last_forward = [&](const std::vector<RouterStats> &all) {
        for (int64_t l = 0; l < L; l++) {
          int64_t width = 0;
          const std::vector<float> gates = model.gates(l, &width);
          INFO("layer " << l);
          check_stats_match_gates(config, all[(size_t)l], gates, width);
        }
      };
      auto same = [&](const std::vector<RouterStats> &x, const std::vector<RouterStats> &y) {
        for (int64_t l = 0; l < L; l++) REQUIRE(same_stats(x[(size_t)l], y[(size_t)l]));
      };

      model.forward(a.data(), b.data(), B, Tn, true);
      const std::vector<RouterStats> trained = stats();
      check_last_forward(trained);
      double aux = 0;
      for (const RouterStats &st : trained) aux += st.aux_loss / (double)L;
      if (config.attention == AttentionKind::Moh || config.moas.mode != MoasMode::Static)
        REQUIRE(aux == Approx(model.aux_loss()).epsilon(1e-6));
      model.backward();  // reads the routing the statistics come from; must leave it as the forward left it
      same(stats(), trained);

      model.forward(b.data(), nullptr, B, Tn, false);
      const std::vector<RouterStats> evaluated = stats();
      check_last_forward(evaluated);
      model.forward(a.data(), b.data(), B, Tn, true);  // no backward after this one
      check_last_forward(stats());
      model.forward(b.data(), nullptr, B, Tn, false);
      same(stats(), evaluated);
    }
  }
}
