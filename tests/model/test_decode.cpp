// Decoding with the KV cache (SPEC §5, §6.6): prefill plus one token at a time gives the logits of a full forward
// over the prefix, for every attention kind (one scheme, each MoAS mode, each MoH strategy), with CoPE and sliding
// windows (SPEC §7), in double. With a window the cache is a ring buffer of O(w + chunk) positions (SPEC §8) whose
// moves never change a logit.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "model/model.hpp"
#include "model_fixtures.hpp"
#include "model_gradcheck.hpp"

using namespace moas;

namespace {

// Rows [t0, t1) of every sequence of a [B, Tn] token matrix.
std::vector<int32_t> columns(const std::vector<int32_t> &tokens, int64_t B, int64_t Tn, int64_t t0, int64_t t1) {
  std::vector<int32_t> out;
  for (int64_t b = 0; b < B; b++) out.insert(out.end(), tokens.begin() + b * Tn + t0, tokens.begin() + b * Tn + t1);
  return out;
}

// Router weights far from uniform: decisions with margins far above rounding differences between the two paths.
void sharpen_routers(Model<double> &model) {
  for (const ParamInfo &info : model.params.infos())
    if (moas_test::is_router_weight(info.name))
      for (int64_t i = 0; i < info.numel; i++) model.params.values[(size_t)(info.offset + i)] *= 40.0;
}

// Feeds [B, Tn] tokens to `cache` in forwards of chunks[0], chunks[1], ... positions (cycling, the last one cut to
// what is left) and returns the logits [B, Tn, V] they gave. *moves counts the forwards after which layer 0's
// buffer no longer starts where it did (the ring moved its last w positions to the front, or grew).
std::vector<double> decode_in_chunks(Model<double> &model, KvCache<double> &cache, const std::vector<int32_t> &tokens,
                                     int64_t B, int64_t Tn, const std::vector<int64_t> &chunks, int64_t *moves) {
  const int64_t V = model.config().vocab_size;
  std::vector<double> logits((size_t)(B * Tn * V));
  *moves = 0;
  for (int64_t t = 0, c = 0; t < Tn; c++) {
    const int64_t n = std::min(chunks[(size_t)c % chunks.size()], Tn - t), first_key = cache.layers[0].first_key;
    const auto step = columns(tokens, B, Tn, t, t + n);
    model.forward(step.data(), nullptr, B, n, false, &cache);
    for (int64_t b = 0; b < B; b++)
      std::copy_n(model.logits().begin() + b * n * V, n * V, logits.begin() + (b * Tn + t) * V);
    *moves += cache.layers[0].first_key != first_key;
    t += n;
  }
  REQUIRE(cache.length == Tn);
  return logits;
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
      sharpen_routers(model);
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

TEST_CASE("with a window the cache is a ring buffer: chunked and token-by-token decoding equal the full forward",
          "[decode][window]") {
  using moas::MoasMode;
  ModelConfig rope_gqa = moas_test::tiny_config(4, 2, 16);
  rope_gqa.position = PositionKind::Rope;
  ModelConfig cope_moh = moas_test::moh_config(4, 2, 16, 1, 2);
  cope_moh.position = PositionKind::Cope;
  cope_moh.cope_max_pos = 4;
  const std::vector<moas_test::NamedConfig> configs = {
      {"GQA 4/2 RoPE", rope_gqa},
      {"MoAS top1", moas_test::moas_config(MoasMode::Top1, {4, 2, 1})},
      {"MoAS soft", moas_test::moas_config(MoasMode::Soft, {4, 2, 1})},
      {"MoH 1 shared + 2 of 3, GQA 4/2", moas_test::moh_config(4, 2, 16, 1, 2)},
      {"StaticPruning 3 of 4, GQA 4/2", moas_test::static_pruning_config(4, 2, 16, 3)},
      {"CoPE MoH 1 shared + 2 of 3, GQA 4/2", cope_moh},
  };
  const int64_t B = 3, Tn = 40;
  const std::vector<int64_t> uneven = {3, 1, 5, 1, 1, 2}, one_by_one = {1};
  for (const auto &[name, base] : configs)
    for (int64_t window : {int64_t(1), int64_t(2), int64_t(5), Tn}) {
      DYNAMIC_SECTION(name << ", window " << window) {
        ModelConfig config = base;
        config.block_size = Tn;
        config.window = window;
        Model<double> model(config);
        moas_test::randomise_cope_embeddings(model.params);
        sharpen_routers(model);
        const auto tokens = moas_test::tokens_for(B * Tn, config.vocab_size, 23);
        model.forward(tokens.data(), nullptr, B, Tn, false);
        const std::vector<double> full = model.logits();

        for (const std::vector<int64_t> &chunks : {uneven, one_by_one}) {
          INFO("chunks of " << chunks.size() << " sizes from " << chunks[0]);
          const int64_t longest = *std::max_element(chunks.begin(), chunks.end());
          KvCache<double> cache;
          model.allocate_cache(&cache, B, Tn);
          int64_t moves = 0;
          REQUIRE(moas_test::close(decode_in_chunks(model, cache, tokens, B, Tn, chunks, &moves), full, 1e-9));
          // Memory: the window's positions, the chunk and a window of slack, not the capacity (40 positions).
          const uint64_t rows = cache.allocated_bytes() / ((uint64_t)B * cache.bytes_per_token());
          REQUIRE(cache.allocated_bytes() == rows * B * cache.bytes_per_token());
          REQUIRE(rows <= (uint64_t)std::min(Tn, 2 * window + longest));
          if (window < Tn) REQUIRE(moves >= 3);  // the buffer moved (wrapped) several times
          else REQUIRE(moves == 0);

          // A reset cache decodes other tokens as a fresh one would.
          const auto other = moas_test::tokens_for(B * Tn, config.vocab_size, 29);
          model.forward(other.data(), nullptr, B, Tn, false);
          const std::vector<double> other_full = model.logits();
          KvCache<double> fresh;
          model.allocate_cache(&fresh, B, Tn);
          const auto from_fresh = decode_in_chunks(model, fresh, other, B, Tn, chunks, &moves);
          cache.reset();
          REQUIRE(cache.length == 0);
          const auto from_reset = decode_in_chunks(model, cache, other, B, Tn, chunks, &moves);
          REQUIRE(moas_test::close(from_reset, from_fresh, 1e-12));
          REQUIRE(moas_test::close(from_reset, other_full, 1e-9));
        }
      }
    }
}

TEST_CASE("a windowed cache's memory is O(window + chunk) whatever its capacity, without a window O(capacity)",
          "[decode][window]") {
  const int64_t B = 2, capacity = 256, window = 4, prompt = 12, steps = 100;
  ModelConfig config = moas_test::tiny_config(4, 2, 16);
  config.block_size = capacity;
  for (int64_t w : {window, int64_t(0)}) {
    config.window = w;
    Model<double> model(config);
    KvCache<double> cache;
    model.allocate_cache(&cache, B, capacity);
    const uint64_t per_row = (uint64_t)B * cache.bytes_per_token();
    REQUIRE(cache.allocated_bytes() == per_row * (uint64_t)(w > 0 ? 2 * w + 1 : capacity));
    const auto tokens = moas_test::tokens_for(B * (prompt + steps), config.vocab_size, 31);
    int64_t moves = 0;
    std::vector<int64_t> chunks((size_t)steps + 1, 1);
    chunks[0] = prompt;  // more than the 2 w + 1 rows a new cache has: it grows once
    decode_in_chunks(model, cache, tokens, B, prompt + steps, chunks, &moves);
    INFO("window " << w);
    if (w > 0) {
      REQUIRE(cache.allocated_bytes() == per_row * (uint64_t)(2 * w + prompt));
      REQUIRE(moves >= 5);  // then moves its last w positions to the front every w + prompt steps
    } else {
      REQUIRE(cache.allocated_bytes() == per_row * (uint64_t)capacity);
    }
  }
}

TEST_CASE("a full cache refuses more positions, with or without a window", "[decode][window]") {
  for (int64_t window : {0, 2}) {
    ModelConfig config = moas_test::tiny_config(4, 2, 16);
    config.window = window;
    Model<double> model(config);
    KvCache<double> cache;
    model.allocate_cache(&cache, 1, 5);
    const auto tokens = moas_test::tokens_for(6, config.vocab_size, 3);
    model.forward(tokens.data(), nullptr, 1, 4, false, &cache);
    REQUIRE_THROWS_AS(model.forward(tokens.data(), nullptr, 1, 2, false, &cache), moas::Error);
    REQUIRE(cache.length == 4);
    model.forward(tokens.data(), nullptr, 1, 1, false, &cache);
    REQUIRE(cache.length == 5);
  }
}
