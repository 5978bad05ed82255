// Bad input never crashes and never corrupts state: each case returns its own status, says what to fix, and the
// model still works afterwards.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <string>
#include <thread>

#include "api_helpers.hpp"

using namespace api_test;

namespace {

// After a failed call: a message exists and the model still trains.
void expect_failure_then_usable(moas_status got, moas_status expected, moas_model *model) {
  INFO("status " << moas_status_string(got) << ": " << moas_last_error());
  REQUIRE(got == expected);
  REQUIRE(std::strlen(moas_last_error()) > 10);
  if (!model) return;
  const auto tokens = sequence(2 * 8, 13, 1);
  const auto targets = sequence(2 * 8, 13, 2);
  float loss = NAN;
  REQUIRE(moas_forward(model, tokens.data(), targets.data(), 2, 8, 1, &loss, nullptr) == MOAS_OK);
  REQUIRE(std::isfinite(loss));
  REQUIRE(moas_backward(model) == MOAS_OK);
}

moas_status create_status(const moas_model_config &c) {
  moas_model *m = nullptr;
  const moas_status s = moas_model_create(&c, &m);
  moas_model_destroy(m);
  if (s != MOAS_OK) REQUIRE(m == nullptr);
  return s;
}

// The config a model gets from a caller whose struct ends at `struct_size` (an older header): the bytes beyond are
// 0xFF (-1 as int32) and must never be read.
moas_model_config config_of_older_caller(uint32_t struct_size) {
  unsigned char buffer[sizeof(moas_model_config)];
  std::memset(buffer, 0xFF, sizeof buffer);
  moas_model_config older = small_config();
  older.struct_size = struct_size;
  std::memcpy(buffer, &older, older.struct_size);
  moas_model *m = nullptr;
  REQUIRE(moas_model_create(reinterpret_cast<const moas_model_config *>(buffer), &m) == MOAS_OK);
  ModelPtr model(m);
  moas_model_config got;
  got.struct_size = sizeof got;
  REQUIRE(moas_model_get_config(model.get(), &got) == MOAS_OK);
  return got;
}

}  // namespace

TEST_CASE("status strings and version queries", "[api]") {
  REQUIRE(std::string(moas_status_string(MOAS_OK)) == "MOAS_OK");
  REQUIRE(std::string(moas_status_string(MOAS_ERR_CHECKPOINT_SHAPE)) == "MOAS_ERR_CHECKPOINT_SHAPE");
  REQUIRE(std::string(moas_status_string((moas_status)999)) == "MOAS_ERR_UNKNOWN_STATUS");
  REQUIRE(moas_abi_version() == MOAS_ABI_VERSION);
  REQUIRE(std::string(moas_version_string()).size() >= 5);
  const std::string info = moas_build_info();
  REQUIRE(info.find(moas_version_string()) != std::string::npos);
  REQUIRE(info.find("float GEMM") != std::string::npos);
  REQUIRE(info.find("CPU threads") != std::string::npos);
}

TEST_CASE("config defaults are the paper's model and honour struct_size", "[api][config]") {
  moas_model_config c;
  std::memset(&c, 0xAB, sizeof c);
  c.struct_size = sizeof c;
  REQUIRE(moas_model_config_default(&c) == MOAS_OK);
  REQUIRE(c.n_layer == 6);
  REQUIRE(c.n_head == 6);
  REQUIRE(c.n_kv_head == 6);
  REQUIRE(c.n_embd == 384);
  REQUIRE(c.block_size == 256);
  REQUIRE(c.vocab_size == 65);
  REQUIRE(c.dropout == Approx(0.2f));
  REQUIRE(c.abi_version == MOAS_ABI_VERSION);
  // A caller whose struct is shorter (an older header) gets no writes past its size.
  unsigned char buffer[sizeof(moas_model_config) + 16];
  std::memset(buffer, 0xCD, sizeof buffer);
  auto *partial = reinterpret_cast<moas_model_config *>(buffer);
  partial->struct_size = 12;
  REQUIRE(moas_model_config_default(partial) == MOAS_OK);
  for (size_t i = 12; i < sizeof buffer; i++) REQUIRE(buffer[i] == 0xCD);
  REQUIRE(moas_model_config_default(nullptr) == MOAS_ERR_NULL_ARGUMENT);
}

TEST_CASE("impossible configs are rejected with a status naming the field", "[api][config]") {
  struct Case {
    const char *what;
    void (*edit)(moas_model_config &);
    moas_status status;
  };
  const Case cases[] = {
      {"n_head does not divide n_embd", [](moas_model_config &c) { c.n_head = 5; }, MOAS_ERR_INVALID_CONFIG},
      {"n_kv_head does not divide n_head", [](moas_model_config &c) { c.n_kv_head = 3; }, MOAS_ERR_INVALID_CONFIG},
      {"n_kv_head above n_head", [](moas_model_config &c) { c.n_kv_head = 8; }, MOAS_ERR_INVALID_CONFIG},
      {"zero layers", [](moas_model_config &c) { c.n_layer = 0; }, MOAS_ERR_INVALID_CONFIG},
      {"zero vocabulary", [](moas_model_config &c) { c.vocab_size = 0; }, MOAS_ERR_INVALID_CONFIG},
      {"negative block size", [](moas_model_config &c) { c.block_size = -4; }, MOAS_ERR_INVALID_CONFIG},
      {"dropout 1", [](moas_model_config &c) { c.dropout = 1.0f; }, MOAS_ERR_INVALID_CONFIG},
      {"dropout NaN", [](moas_model_config &c) { c.dropout = NAN; }, MOAS_ERR_INVALID_CONFIG},
      {"unknown norm", [](moas_model_config &c) { c.norm = 7; }, MOAS_ERR_INVALID_CONFIG},
      {"unknown mlp", [](moas_model_config &c) { c.mlp = -1; }, MOAS_ERR_INVALID_CONFIG},
      {"RoPE with odd head size", [](moas_model_config &c) { c.n_embd = 36, c.n_head = 4, c.position = 1; },
       MOAS_ERR_INVALID_CONFIG},
      {"CUDA without the CUDA backend", [](moas_model_config &c) { c.device = MOAS_DEVICE_CUDA; },
       MOAS_ERR_DEVICE_UNAVAILABLE},
      {"struct_size too small", [](moas_model_config &c) { c.struct_size = 8; }, MOAS_ERR_ABI_MISMATCH},
      {"abi version from another header", [](moas_model_config &c) { c.abi_version = 999; },
       MOAS_ERR_ABI_MISMATCH},
  };
  for (const Case &k : cases) {
    DYNAMIC_SECTION(k.what) {
      moas_model_config c = small_config();
      k.edit(c);
      const moas_status s = create_status(c);
      INFO(moas_last_error());
      REQUIRE(s == k.status);
    }
  }
  moas_model *m = nullptr;
  REQUIRE(moas_model_create(nullptr, &m) == MOAS_ERR_NULL_ARGUMENT);
  const moas_model_config c = small_config();
  REQUIRE(moas_model_create(&c, nullptr) == MOAS_ERR_NULL_ARGUMENT);
  moas_model_destroy(nullptr);
}

TEST_CASE("CoPE and window settings: bad values name their field, older callers get the defaults", "[api][config]") {
  struct Case {
    const char *field;
    void (*edit)(moas_model_config &);
  };
  const Case cases[] = {
      {"position", [](moas_model_config &c) { c.position = 3; }},
      {"cope_max_pos", [](moas_model_config &c) { c.position = MOAS_POSITION_COPE, c.cope_max_pos = 0; }},
      {"window_size", [](moas_model_config &c) { c.window_size = -1; }},
  };
  for (const Case &k : cases) {
    DYNAMIC_SECTION(k.field) {
      moas_model_config c = small_config();
      k.edit(c);
      REQUIRE(create_status(c) == MOAS_ERR_INVALID_CONFIG);
      REQUIRE(std::string(moas_last_error()).find(k.field) != std::string::npos);
    }
  }
  moas_model_config c = small_config();
  REQUIRE(c.cope_max_pos == 64);
  REQUIRE(c.window_size == 0);
  c.cope_max_pos = 0;  // read only with CoPE
  REQUIRE(create_status(c) == MOAS_OK);

  // A 0.2.0 caller's struct ends before cope_max_pos.
  const moas_model_config got = config_of_older_caller(offsetof(moas_model_config, cope_max_pos));
  REQUIRE(got.cope_max_pos == 64);
  REQUIRE(got.window_size == 0);
}

TEST_CASE("matmul_precision: bad values name the field, older callers get fp32, the CPU computes in fp32 anyway",
          "[api][config]") {
  for (const int32_t bad : {-1, 3}) {
    moas_model_config c = small_config();
    c.matmul_precision = bad;
    REQUIRE(create_status(c) == MOAS_ERR_INVALID_CONFIG);
    REQUIRE(std::string(moas_last_error()).find("matmul_precision") != std::string::npos);
  }
  moas_model_config reserved = small_config();
  reserved.reserved2 = 1;
  REQUIRE(create_status(reserved) == MOAS_ERR_INVALID_CONFIG);
  REQUIRE(std::string(moas_last_error()).find("reserved2") != std::string::npos);

  // A 0.4.0 caller's struct ends before matmul_precision.
  moas_model_config got = config_of_older_caller(offsetof(moas_model_config, matmul_precision));
  REQUIRE(got.matmul_precision == MOAS_MATMUL_FP32);

  // The setting is kept (a config moves between devices unchanged), and the CPU's products stay fp32.
  moas_model_config bf16 = small_config();
  bf16.matmul_precision = MOAS_MATMUL_BF16;
  ModelPtr cpu_bf16 = make_model(bf16), cpu_fp32 = make_model(small_config());
  REQUIRE(moas_model_get_config(cpu_bf16.get(), &got) == MOAS_OK);
  REQUIRE(got.matmul_precision == MOAS_MATMUL_BF16);
  const auto tokens = sequence(2 * 8, 13, 1);
  float loss_bf16 = 0, loss_fp32 = 1;
  REQUIRE(moas_forward(cpu_bf16.get(), tokens.data(), tokens.data(), 2, 8, 0, &loss_bf16, nullptr) == MOAS_OK);
  REQUIRE(moas_forward(cpu_fp32.get(), tokens.data(), tokens.data(), 2, 8, 0, &loss_fp32, nullptr) == MOAS_OK);
  REQUIRE(loss_bf16 == loss_fp32);
}

TEST_CASE("bad forward inputs return their status and leave the model usable", "[api][errors]") {
  ModelPtr model = make_model(small_config());
  auto tokens = sequence(2 * 8, 13, 3);
  auto targets = sequence(2 * 8, 13, 4);
  float loss = 0;
  expect_failure_then_usable(moas_forward(model.get(), nullptr, nullptr, 2, 8, 0, &loss, nullptr),
                             MOAS_ERR_NULL_ARGUMENT, model.get());
  expect_failure_then_usable(moas_forward(nullptr, tokens.data(), nullptr, 2, 8, 0, &loss, nullptr),
                             MOAS_ERR_NULL_ARGUMENT, model.get());
  expect_failure_then_usable(moas_forward(model.get(), tokens.data(), nullptr, 0, 8, 0, &loss, nullptr),
                             MOAS_ERR_SIZE_MISMATCH, model.get());
  expect_failure_then_usable(moas_forward(model.get(), tokens.data(), nullptr, 2, -1, 0, &loss, nullptr),
                             MOAS_ERR_SIZE_MISMATCH, model.get());
  std::vector<int32_t> long_tokens(17, 1);
  expect_failure_then_usable(moas_forward(model.get(), long_tokens.data(), nullptr, 1, 17, 0, &loss, nullptr),
                             MOAS_ERR_CONTEXT_TOO_LONG, model.get());
  tokens[5] = 13;
  expect_failure_then_usable(moas_forward(model.get(), tokens.data(), nullptr, 2, 8, 0, &loss, nullptr),
                             MOAS_ERR_TOKEN_OUT_OF_RANGE, model.get());
  REQUIRE(std::string(moas_last_error()).find("tokens[5]") != std::string::npos);
  tokens[5] = -1;
  expect_failure_then_usable(moas_forward(model.get(), tokens.data(), nullptr, 2, 8, 0, &loss, nullptr),
                             MOAS_ERR_TOKEN_OUT_OF_RANGE, model.get());
  tokens[5] = 2;
  targets[3] = -2;
  expect_failure_then_usable(moas_forward(model.get(), tokens.data(), targets.data(), 2, 8, 1, &loss, nullptr),
                             MOAS_ERR_TARGET_OUT_OF_RANGE, model.get());
  targets[3] = 13;
  expect_failure_then_usable(moas_forward(model.get(), tokens.data(), targets.data(), 2, 8, 1, &loss, nullptr),
                             MOAS_ERR_TARGET_OUT_OF_RANGE, model.get());
  targets[3] = -1;
  expect_failure_then_usable(moas_forward(model.get(), tokens.data(), targets.data(), 2, 8, 2, &loss, nullptr),
                             MOAS_ERR_INVALID_CONFIG, model.get());
}

TEST_CASE("backward and logits need a suitable forward first", "[api][errors]") {
  ModelPtr model = make_model(small_config());
  std::vector<float> logits(8 * 13);
  REQUIRE(moas_logits(model.get(), logits.data(), logits.size()) == MOAS_ERR_NO_FORWARD);
  REQUIRE(moas_backward(model.get()) == MOAS_ERR_NO_FORWARD);
  const auto tokens = sequence(8, 13, 5);
  REQUIRE(moas_forward(model.get(), tokens.data(), nullptr, 1, 8, 0, nullptr, nullptr) == MOAS_OK);
  REQUIRE(moas_backward(model.get()) == MOAS_ERR_NO_FORWARD);  // eval forward keeps nothing
  REQUIRE(moas_forward(model.get(), tokens.data(), nullptr, 1, 8, 1, nullptr, nullptr) == MOAS_OK);
  REQUIRE(moas_backward(model.get()) == MOAS_ERR_NO_FORWARD);  // no targets, no loss to differentiate
  REQUIRE(moas_logits(model.get(), logits.data(), logits.size() - 1) == MOAS_ERR_SIZE_MISMATCH);
  REQUIRE(moas_logits(model.get(), nullptr, logits.size()) == MOAS_ERR_NULL_ARGUMENT);
  REQUIRE(moas_logits(model.get(), logits.data(), logits.size()) == MOAS_OK);
}

TEST_CASE("parameter access validates names, sizes and values", "[api][errors]") {
  ModelPtr model = make_model(small_config());
  const char *name = "transformer.h.0.attn.c_proj.weight";
  std::vector<float> w = read_param(model.get(), name);
  REQUIRE(w.size() == 32 * 32);
  REQUIRE(moas_parameter_read(model.get(), "no.such.weight", w.data(), w.size()) == MOAS_ERR_UNKNOWN_PARAMETER);
  REQUIRE(moas_parameter_read(model.get(), name, w.data(), w.size() + 1) == MOAS_ERR_SIZE_MISMATCH);
  REQUIRE(moas_parameter_read(model.get(), nullptr, w.data(), w.size()) == MOAS_ERR_NULL_ARGUMENT);
  std::vector<float> poisoned = w;
  poisoned[17] = NAN;
  expect_failure_then_usable(moas_parameter_write(model.get(), name, poisoned.data(), poisoned.size()),
                             MOAS_ERR_NON_FINITE, model.get());
  REQUIRE(read_param(model.get(), name) == w);  // untouched
  poisoned[17] = INFINITY;
  REQUIRE(moas_parameter_write(model.get(), name, poisoned.data(), poisoned.size()) == MOAS_ERR_NON_FINITE);
  std::vector<float> doubled = w;
  for (float &v : doubled) v *= 2;
  REQUIRE(moas_parameter_write(model.get(), name, doubled.data(), doubled.size()) == MOAS_OK);
  REQUIRE(read_param(model.get(), name) == doubled);
  moas_parameter_info info;
  info.struct_size = sizeof info;
  size_t count = 0;
  REQUIRE(moas_parameter_count(model.get(), &count) == MOAS_OK);
  REQUIRE(moas_parameter_info_at(model.get(), count, &info) == MOAS_ERR_INDEX_OUT_OF_RANGE);
  info.struct_size = 4;
  REQUIRE(moas_parameter_info_at(model.get(), 0, &info) == MOAS_ERR_ABI_MISMATCH);
}

TEST_CASE("optimizer: bad settings are rejected, a non-finite gradient skips the step", "[api][errors]") {
  ModelPtr model = make_model(small_config());
  moas_adamw_config adamw;
  adamw.struct_size = sizeof adamw;
  REQUIRE(moas_adamw_config_default(&adamw) == MOAS_OK);
  REQUIRE(adamw.lr == Approx(1e-3f));
  REQUIRE(adamw.beta2 == Approx(0.99f));
  moas_adamw_config bad = adamw;
  bad.beta1 = 1.0f;
  REQUIRE(moas_optimizer_step(model.get(), &bad, nullptr) == MOAS_ERR_INVALID_CONFIG);
  bad = adamw;
  bad.lr = -1;
  REQUIRE(moas_optimizer_step(model.get(), &bad, nullptr) == MOAS_ERR_INVALID_CONFIG);
  REQUIRE(moas_optimizer_step(model.get(), nullptr, nullptr) == MOAS_ERR_NULL_ARGUMENT);

}

TEST_CASE("weights that overflow give MOAS_ERR_NON_FINITE, refuse backward, and recover when restored", "[api][errors]") {
  ModelPtr model = make_model(small_config());
  const std::vector<float> wte = read_param(model.get(), "transformer.wte.weight");
  std::vector<float> huge(wte.size(), 3e38f);
  REQUIRE(moas_parameter_write(model.get(), "transformer.wte.weight", huge.data(), huge.size()) == MOAS_OK);
  const auto tokens = sequence(8, 13, 6);
  const auto targets = sequence(8, 13, 7);
  float loss = 0;
  REQUIRE(moas_forward(model.get(), tokens.data(), targets.data(), 1, 8, 1, &loss, nullptr) == MOAS_ERR_NON_FINITE);
  REQUIRE(std::string(moas_last_error()).find("not finite") != std::string::npos);
  REQUIRE(moas_backward(model.get()) == MOAS_ERR_NO_FORWARD);
  REQUIRE(moas_parameter_write(model.get(), "transformer.wte.weight", wte.data(), wte.size()) == MOAS_OK);
  expect_failure_then_usable(MOAS_ERR_NON_FINITE, MOAS_ERR_NON_FINITE, model.get());
}

TEST_CASE("router stats: this model has no router", "[api][errors]") {
  ModelPtr model = make_model(small_config());
  moas_layer_router_stats stats;
  stats.struct_size = sizeof stats;
  REQUIRE(moas_router_stats(model.get(), 0, &stats) == MOAS_ERR_NO_FORWARD);
  const auto tokens = sequence(8, 13, 1);
  REQUIRE(moas_forward(model.get(), tokens.data(), nullptr, 1, 8, 0, nullptr, nullptr) == MOAS_OK);
  REQUIRE(moas_router_stats(model.get(), 0, &stats) == MOAS_ERR_NO_ROUTER);
  REQUIRE(std::string(moas_last_error()).find("no router") != std::string::npos);
  REQUIRE(moas_router_stats(model.get(), 2, &stats) == MOAS_ERR_INDEX_OUT_OF_RANGE);
  REQUIRE(moas_router_stats(model.get(), 0, nullptr) == MOAS_ERR_NULL_ARGUMENT);
}

TEST_CASE("last error is per thread", "[api]") {
  REQUIRE(moas_model_config_default(nullptr) == MOAS_ERR_NULL_ARGUMENT);
  const std::string here = moas_last_error();
  std::string there = "unset";
  std::thread([&] { there = moas_last_error(); }).join();
  REQUIRE(here.find("cfg") != std::string::npos);
  REQUIRE(there.empty());
}
