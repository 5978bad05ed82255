// Results that are not finite are never returned with MOAS_OK, and the call that finds them changes nothing: an
// optimiser step is refused whole, a forward is forgotten (no backward, no dropout draw), a prefill keeps the cache's
// length, a layer forward leaves y alone.
#include <cfloat>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "api/api_helpers.hpp"

using namespace api_test;

namespace {

moas_adamw_config adamw(float lr) {
  moas_adamw_config c;
  c.struct_size = sizeof c;
  REQUIRE(moas_adamw_config_default(&c) == MOAS_OK);
  c.lr = lr;
  return c;
}

// One training forward and backward, so the model has gradients to step with.
void forward_backward(moas_model *m, uint32_t seed) {
  const auto tokens = sequence(2 * 8, 13, seed), targets = sequence(2 * 8, 13, seed + 1);
  REQUIRE(moas_forward(m, tokens.data(), targets.data(), 2, 8, 1, nullptr, nullptr) == MOAS_OK);
  REQUIRE(moas_backward(m) == MOAS_OK);
}

uint64_t steps_of(const moas_model *m) {
  uint64_t steps = 0;
  REQUIRE(moas_optimizer_steps(m, &steps) == MOAS_OK);
  return steps;
}

size_t parameter_total(const moas_model *m) {
  uint64_t n = 0;
  REQUIRE(moas_model_num_parameters(m, &n) == MOAS_OK);
  return (size_t)n;
}

// Overwrites element `index` of tensor `name` in a safetensors file libmoas wrote (F32, little-endian host).
void patch_tensor(const std::string &path, const std::string &name, size_t index, float value) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t header_len = 0;
  file.read(reinterpret_cast<char *>(&header_len), 8);
  std::string header(header_len, ' ');
  file.read(header.data(), (std::streamsize)header_len);
  const auto json = nlohmann::json::parse(header);
  const uint64_t begin = json.at(name).at("data_offsets").at(0).get<uint64_t>();
  file.seekp((std::streamoff)(8 + header_len + begin + 4 * index));
  file.write(reinterpret_cast<const char *>(&value), 4);
  REQUIRE(file.good());
}

}  // namespace

TEST_CASE("learning rates past 1 are refused", "[api][non_finite]") {
  ModelPtr model = make_model(small_config());
  forward_backward(model.get(), 1);
  const auto before = all_params(model.get());
  for (float lr : {FLT_MAX, 1e30f, 1.5f, std::numeric_limits<float>::infinity(), -1e-3f}) {
    INFO("lr " << lr);
    const moas_adamw_config c = adamw(lr);
    CHECK(moas_optimizer_step(model.get(), &c, nullptr) == MOAS_ERR_INVALID_CONFIG);
    CHECK(std::string(moas_last_error()).find("lr") != std::string::npos);
  }
  moas_adamw_config decay = adamw(0.5f);
  decay.weight_decay = 4.0f;  // multiplies weights by 1 - 2 = -1
  CHECK(moas_optimizer_step(model.get(), &decay, nullptr) == MOAS_ERR_INVALID_CONFIG);
  CHECK(all_params(model.get()) == before);
  CHECK(steps_of(model.get()) == 0);
}

TEST_CASE("a step whose result overflows is not applied", "[api][non_finite]") {
  ModelPtr model = make_model(small_config());
  forward_backward(model.get(), 2);
  moas_adamw_config c = adamw(1e-3f);
  c.grad_clip = 0;  // clipping would scale the huge gradients below back to sense
  REQUIRE(moas_optimizer_step(model.get(), &c, nullptr) == MOAS_OK);
  const auto before = all_params(model.get());
  // Finite gradients whose squares overflow a float: the second moment would become Inf.
  std::vector<float> huge(parameter_total(model.get()), 1e30f);
  REQUIRE(moas_gradients_write(model.get(), huge.data(), huge.size()) == MOAS_OK);
  CHECK(moas_optimizer_step(model.get(), &c, nullptr) == MOAS_ERR_NON_FINITE);
  CHECK(std::string(moas_last_error()).find("nothing changed") != std::string::npos);
  CHECK(all_params(model.get()) == before);
  CHECK(steps_of(model.get()) == 1);
  // The moments are untouched too: the next ordinary step equals a twin's that never saw the refused one.
  ModelPtr twin = make_model(small_config());
  forward_backward(twin.get(), 2);
  REQUIRE(moas_optimizer_step(twin.get(), &c, nullptr) == MOAS_OK);
  for (moas_model *m : {model.get(), twin.get()}) {
    REQUIRE(moas_zero_grad(m) == MOAS_OK);
    forward_backward(m, 3);
    REQUIRE(moas_optimizer_step(m, &c, nullptr) == MOAS_OK);
  }
  CHECK(all_params(model.get()) == all_params(twin.get()));
}

TEST_CASE("optimizer state is checked like weights", "[api][non_finite]") {
  TempDir dir;
  ModelPtr model = make_model(small_config());
  forward_backward(model.get(), 4);
  const moas_adamw_config c = adamw(1e-3f);
  REQUIRE(moas_optimizer_step(model.get(), &c, nullptr) == MOAS_OK);
  const std::string good = dir.file("good.optim.safetensors");
  REQUIRE(moas_optimizer_save(model.get(), good.c_str()) == MOAS_OK);
  ModelPtr fresh = make_model(small_config());

  SECTION("a negative second moment") {
    const std::string path = dir.file("negative.optim.safetensors");
    std::filesystem::copy_file(good, path);
    patch_tensor(path, "transformer.h.1.mlp.c_proj.weight.exp_avg_sq", 5, -1e-3f);
    CHECK(moas_optimizer_load(fresh.get(), path.c_str()) == MOAS_ERR_CHECKPOINT_VALUE);
    CHECK(std::string(moas_last_error()).find(path) != std::string::npos);
    CHECK(steps_of(fresh.get()) == 0);
  }
  SECTION("moments that do not belong together") {
    // A huge first moment over a zero second moment: finite numbers whose next update is not.
    const std::string path = dir.file("mismatched.optim.safetensors");
    std::filesystem::copy_file(good, path);
    patch_tensor(path, "transformer.h.0.mlp.c_fc.weight.exp_avg", 0, 3e38f);
    patch_tensor(path, "transformer.h.0.mlp.c_fc.weight.exp_avg_sq", 0, 0.0f);
    REQUIRE(moas_optimizer_load(fresh.get(), path.c_str()) == MOAS_OK);
    forward_backward(fresh.get(), 5);
    const auto before = all_params(fresh.get());
    CHECK(moas_optimizer_step(fresh.get(), &c, nullptr) == MOAS_ERR_NON_FINITE);
    CHECK(all_params(fresh.get()) == before);
    CHECK(steps_of(fresh.get()) == 1);
  }
}

TEST_CASE("non-finite logits fail the forward and leave no trace", "[api][non_finite]") {
  moas_model_config cfg = small_config();
  cfg.dropout = 0.1f;
  ModelPtr model = make_model(cfg), twin = make_model(cfg);
  const char *name = "transformer.ln_f.weight";
  const std::vector<float> ln_f = read_param(model.get(), name);
  const std::vector<float> huge(ln_f.size(), 3e38f);
  const auto tokens = sequence(2 * 8, 13, 6), targets = sequence(2 * 8, 13, 7);
  std::vector<int32_t> no_targets(targets.size(), -1);  // every position ignored: the loss says nothing

  REQUIRE(moas_parameter_write(model.get(), name, huge.data(), huge.size()) == MOAS_OK);
  CHECK(moas_forward(model.get(), tokens.data(), nullptr, 2, 8, 0, nullptr, nullptr) == MOAS_ERR_NON_FINITE);
  CHECK(moas_forward(model.get(), tokens.data(), nullptr, 2, 8, 1, nullptr, nullptr) == MOAS_ERR_NON_FINITE);
  CHECK(moas_forward(model.get(), tokens.data(), no_targets.data(), 2, 8, 1, nullptr, nullptr) ==
        MOAS_ERR_NON_FINITE);
  CHECK(moas_forward(model.get(), tokens.data(), targets.data(), 2, 8, 1, nullptr, nullptr) == MOAS_ERR_NON_FINITE);
  CHECK(moas_backward(model.get()) == MOAS_ERR_NO_FORWARD);

  // No dropout mask was drawn by the failed training forwards: the next one matches a twin's first.
  REQUIRE(moas_parameter_write(model.get(), name, ln_f.data(), ln_f.size()) == MOAS_OK);
  float loss = 0, twin_loss = 0;
  REQUIRE(moas_forward(model.get(), tokens.data(), targets.data(), 2, 8, 1, &loss, nullptr) == MOAS_OK);
  REQUIRE(moas_forward(twin.get(), tokens.data(), targets.data(), 2, 8, 1, &twin_loss, nullptr) == MOAS_OK);
  CHECK(loss == twin_loss);
}

TEST_CASE("a non-finite prefill keeps the cache as it was", "[api][non_finite]") {
  ModelPtr model = make_model(small_config());
  moas_kv_cache *raw = nullptr;
  REQUIRE(moas_kv_cache_create(model.get(), 1, 16, &raw) == MOAS_OK);
  std::unique_ptr<moas_kv_cache, void (*)(moas_kv_cache *)> cache(raw, moas_kv_cache_destroy);
  const auto tokens = sequence(8, 13, 8);
  std::vector<float> last(13);
  REQUIRE(moas_prefill(model.get(), cache.get(), tokens.data(), 4, last.data(), last.size()) == MOAS_OK);
  const std::vector<float> expected = [&] {
    ModelPtr twin = make_model(small_config());
    moas_kv_cache *c = nullptr;
    REQUIRE(moas_kv_cache_create(twin.get(), 1, 16, &c) == MOAS_OK);
    std::vector<float> out(13);
    REQUIRE(moas_prefill(twin.get(), c, tokens.data(), 8, out.data(), out.size()) == MOAS_OK);
    moas_kv_cache_destroy(c);
    return out;
  }();

  const char *name = "transformer.ln_f.weight";
  const std::vector<float> ln_f = read_param(model.get(), name), huge(ln_f.size(), 3e38f);
  REQUIRE(moas_parameter_write(model.get(), name, huge.data(), huge.size()) == MOAS_OK);
  std::vector<float> sentinel(13, 7.0f);
  CHECK(moas_prefill(model.get(), cache.get(), tokens.data() + 4, 2, sentinel.data(), sentinel.size()) ==
        MOAS_ERR_NON_FINITE);
  CHECK(sentinel == std::vector<float>(13, 7.0f));
  int32_t length = 0;
  REQUIRE(moas_kv_cache_length(cache.get(), &length) == MOAS_OK);
  CHECK(length == 4);
  // The cached positions still hold what they held: going on gives the twin's logits.
  REQUIRE(moas_parameter_write(model.get(), name, ln_f.data(), ln_f.size()) == MOAS_OK);
  REQUIRE(moas_prefill(model.get(), cache.get(), tokens.data() + 4, 4, last.data(), last.size()) == MOAS_OK);
  for (size_t i = 0; i < last.size(); i++) CHECK(last[i] == Approx(expected[i]).margin(1e-5));
}

TEST_CASE("a non-finite layer output leaves y alone", "[api][non_finite]") {
  LayerPtr layer = make_layer(layer_config());
  const size_t len = 2 * 8 * 32;
  std::vector<float> x = random_floats(len, 9, 1e36f);  // finite, but projections of it overflow
  const std::vector<float> original = x;
  CHECK(moas_layer_forward(layer.get(), x.data(), x.data(), len, 2, 8, 1, nullptr) == MOAS_ERR_NON_FINITE);
  CHECK(x == original);
  std::vector<float> dx(len);
  CHECK(moas_layer_backward(layer.get(), x.data(), dx.data(), len) == MOAS_ERR_NO_FORWARD);
}

TEST_CASE("router_stats_all writes all entries or none", "[api][non_finite]") {
  moas_model_config cfg = small_config();
  cfg.attention = MOAS_ATTENTION_MOAS;
  cfg.n_kv_head = cfg.n_head;
  ModelPtr model = make_model(cfg);
  const auto tokens = sequence(2 * 8, 13, 10);
  REQUIRE(moas_forward(model.get(), tokens.data(), nullptr, 2, 8, 0, nullptr, nullptr) == MOAS_OK);
  std::vector<moas_layer_router_stats> stats(2);
  std::memset(stats.data(), 0x5a, sizeof(moas_layer_router_stats) * 2);
  stats[0].struct_size = sizeof(moas_layer_router_stats);
  stats[1].struct_size = 4;  // a caller bug in the second entry
  std::vector<unsigned char> before(reinterpret_cast<unsigned char *>(stats.data()),
                                    reinterpret_cast<unsigned char *>(stats.data() + 2));
  CHECK(moas_router_stats_all(model.get(), stats.data(), 2) != MOAS_OK);
  CHECK(std::memcmp(before.data(), stats.data(), before.size()) == 0);
}

TEST_CASE("user metadata must be UTF-8", "[api][non_finite]") {
  TempDir dir;
  ModelPtr model = make_model(small_config());
  const std::string path = dir.file("m.safetensors");
  CHECK(moas_model_save(model.get(), path.c_str(), "caf\xe9") == MOAS_ERR_INVALID_ARGUMENT);
  CHECK(std::string(moas_last_error()).find("UTF-8") != std::string::npos);
  CHECK(!std::filesystem::exists(path));
  CHECK(moas_model_save(model.get(), path.c_str(), "caf\xc3\xa9") == MOAS_OK);
}

TEST_CASE("a step the cheap bounds cannot vouch for is still taken when finite", "[api][non_finite]") {
  // Gradients of 1e10 with eps 1e-30: the bound lr * |m| / eps overflows, the real update (about lr) does not.
  ModelPtr model = make_model(small_config());
  forward_backward(model.get(), 11);
  std::vector<float> large(parameter_total(model.get()), 1e10f);
  REQUIRE(moas_gradients_write(model.get(), large.data(), large.size()) == MOAS_OK);
  moas_adamw_config c = adamw(1e-3f);
  c.grad_clip = 0;
  c.eps = 1e-30f;
  const auto before = all_params(model.get());
  REQUIRE(moas_optimizer_step(model.get(), &c, nullptr) == MOAS_OK);
  CHECK(steps_of(model.get()) == 1);
  const auto after = all_params(model.get());
  for (size_t i = 0; i < after.size(); i++) CHECK(std::fabs(after[i] - before[i]) < 2e-3f);
}
