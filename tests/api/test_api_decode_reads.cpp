// moas_decode_read_bytes: the bytes a decode step must read, checked against sums written here from the model's
// parameter list and the cache's size, for dense attention (everything but the position table's other rows), a
// window (only the cached positions it sees), top-1 MoAS (one branch's query and output projections and cache, of
// soft MoAS's three) and MoH (its active heads' share of them); and its refusals.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "api_helpers.hpp"

using namespace api_test;

namespace {

struct Reads {
  uint64_t weights, cache;
};

Reads reads_after(const moas_model_config &c, int32_t positions) {
  ModelPtr model = make_model(c);
  moas_kv_cache *cache = nullptr;
  REQUIRE(moas_kv_cache_create(model.get(), 1, c.block_size, &cache) == MOAS_OK);
  std::vector<int32_t> tokens((size_t)positions, 1);
  if (positions > 0) REQUIRE(moas_prefill(model.get(), cache, tokens.data(), positions, nullptr, 0) == MOAS_OK);
  Reads r{};
  REQUIRE(moas_decode_read_bytes(cache, &r.weights, &r.cache) == MOAS_OK);
  moas_kv_cache_destroy(cache);
  return r;
}

uint64_t parameter_bytes(const moas_model_config &c) {
  ModelPtr model = make_model(c);
  size_t count = 0;
  REQUIRE(moas_parameter_count(model.get(), &count) == MOAS_OK);
  uint64_t total = 0;
  for (size_t i = 0; i < count; i++) {
    moas_parameter_info info;
    info.struct_size = sizeof info;
    REQUIRE(moas_parameter_info_at(model.get(), i, &info) == MOAS_OK);
    total += info.numel;
  }
  return 4 * total;
}

uint64_t cache_bytes_per_token(const moas_model_config &c) {
  ModelPtr model = make_model(c);
  moas_kv_cache *cache = nullptr;
  REQUIRE(moas_kv_cache_create(model.get(), 1, 4, &cache) == MOAS_OK);
  uint64_t bytes = 0;
  REQUIRE(moas_kv_cache_bytes_per_token(cache, &bytes) == MOAS_OK);
  moas_kv_cache_destroy(cache);
  return bytes;
}

}  // namespace

TEST_CASE("decode read bytes of dense attention: every weight once, the whole cache", "[api][decode]") {
  moas_model_config c = small_config();  // GQA 4/2, learned positions: wpe [16, 32]
  const uint64_t C = (uint64_t)c.n_embd;
  // All parameters but the position table's other rows, plus the tied head's second read of the embedding.
  const uint64_t weights = parameter_bytes(c) - 4 * ((uint64_t)c.block_size - 1) * C + 4 * C;
  const Reads empty = reads_after(c, 0), some = reads_after(c, 11);
  CHECK(empty.weights == weights);
  CHECK(empty.cache == 0);
  CHECK(some.weights == weights);
  CHECK(some.cache == 11 * cache_bytes_per_token(c));

  c.window_size = 4;
  CHECK(reads_after(c, 11).cache == 4 * cache_bytes_per_token(c));
  CHECK(reads_after(c, 3).cache == 3 * cache_bytes_per_token(c));
}

TEST_CASE("decode read bytes of routed attention count what a token uses", "[api][decode][routing]") {
  moas_model_config c = small_config();
  const uint64_t C = (uint64_t)c.n_embd, L = (uint64_t)c.n_layer;
  c.n_kv_head = c.n_head;
  c.attention = MOAS_ATTENTION_MOAS;
  c.moas_mode = MOAS_MODE_SOFT;
  const Reads soft = reads_after(c, 9);
  c.moas_mode = MOAS_MODE_TOP1;
  const Reads top1 = reads_after(c, 9);
  // Three branches, each with C x C query and output projections: top-1 reads one branch's of them.
  CHECK(soft.weights - top1.weights == 4 * L * 2 * (3 - 1) * C * C);
  CHECK(soft.cache == 9 * cache_bytes_per_token(c));
  CHECK(3 * top1.cache == soft.cache);

  c.attention = MOAS_ATTENTION_MOH;
  c.head_selection.strategy = MOAS_HEADS_ALL;
  const Reads all = reads_after(c, 9);
  c.head_selection.strategy = MOAS_HEADS_MIXTURE;  // 1 shared + 2 of 3 routed: 3 of 4 heads
  c.head_selection.num_shared_heads = 1;
  c.head_selection.num_active_routed_heads = 2;
  const Reads mixture = reads_after(c, 9);
  const uint64_t routers = 4 * L * (3 + 2) * C;  // wg [3, C] and the head-type router wg_0 [2, C]
  CHECK(mixture.weights == all.weights - 4 * L * 2 * C * C / 4 + routers);
  CHECK(4 * mixture.cache == 3 * all.cache);
}

TEST_CASE("decode read bytes refuses null arguments", "[api][decode][errors]") {
  uint64_t a = 0, b = 0;
  CHECK(moas_decode_read_bytes(nullptr, &a, &b) == MOAS_ERR_NULL_ARGUMENT);
  const moas_model_config c = small_config();
  ModelPtr model = make_model(c);
  moas_kv_cache *cache = nullptr;
  REQUIRE(moas_kv_cache_create(model.get(), 1, 8, &cache) == MOAS_OK);
  CHECK(moas_decode_read_bytes(cache, nullptr, &b) == MOAS_ERR_NULL_ARGUMENT);
  CHECK(moas_decode_read_bytes(cache, &a, nullptr) == MOAS_ERR_NULL_ARGUMENT);
  moas_kv_cache_destroy(cache);
}
