// The "config" a checkpoint carries: read strictly (types, ranges, unknown fields), and compared field by field with
// the model it is loaded into, every field that changes the math included.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <string>

#include "base/error.hpp"
#include "config/config.hpp"

namespace {

nlohmann::json base_config(const char *attention = "scheme") {
  moas::ModelConfig c = moas::validate([] {
    moas_model_config d;
    d.struct_size = sizeof d;
    moas_model_config_default(&d);
    d.position = MOAS_POSITION_ROPE;
    return d;
  }());
  nlohmann::json j = nlohmann::json::parse(moas::to_json(c));
  j["attention"] = attention;
  if (std::string(attention) == "moas") {
    j["moas_mode"] = "soft";
    j["moas_branch_kv_heads"] = {6, 2, 1};
    j["moas_aux_weight"] = 0.01;
  }
  return j;
}

// The status and message from_json ends with (MOAS_OK and "" when it accepts).
std::pair<moas_status, std::string> read(const nlohmann::json &j) {
  try {
    moas::from_json(j.dump(), "f.safetensors");
  } catch (const moas::Error &e) {
    return {e.status(), e.what()};
  }
  return {MOAS_OK, ""};
}

}  // namespace

TEST_CASE("checkpoint config: wrong types are refused by name", "[checkpoint_config]") {
  REQUIRE(read(base_config()).first == MOAS_OK);
  const std::pair<const char *, nlohmann::json> cases[] = {
      {"rope_base", "500000"}, {"dropout", "0.1"}, {"attn_dropout", 1},   {"seed", "1"},   {"seed", -1},
      {"n_embd", 32.5},        {"bias", 1},        {"vocab_size", "65"}, {"norm", 3},     {"dropout", 1e300},
      {"block_size", 4294967296LL}, {"n_layer", -1}, {"n_head", nullptr}};
  for (const auto &[key, value] : cases) {
    nlohmann::json j = base_config();
    j[key] = value;
    INFO(key << " = " << value.dump());
    const auto [status, message] = read(j);
    CHECK(status == MOAS_ERR_CHECKPOINT_CONFIG);
    CHECK(message.find(key) != std::string::npos);
    CHECK(message.find("f.safetensors") != std::string::npos);
  }
}

TEST_CASE("checkpoint config: out-of-range lists and unknown fields", "[checkpoint_config]") {
  nlohmann::json j = base_config("moas");
  REQUIRE(read(j).first == MOAS_OK);
  j["moas_branch_kv_heads"] = nlohmann::json::parse("[0, 4294967298, 1]");
  auto [status, message] = read(j);
  CHECK(status == MOAS_ERR_CHECKPOINT_CONFIG);
  CHECK(message.find("4294967298") != std::string::npos);
  j = base_config();
  j["rope_scaling"] = 2.0;
  std::tie(status, message) = read(j);
  CHECK(status == MOAS_ERR_CHECKPOINT_CONFIG);
  CHECK(message.find("rope_scaling") != std::string::npos);
}

TEST_CASE("checkpoint config: every math field is compared", "[checkpoint_config]") {
  for (const char *attention : {"scheme", "moas"}) {
    const moas::ModelConfig model = moas::from_json(base_config(attention).dump(), "m");
    const std::pair<const char *, nlohmann::json> changes[] = {
        {"rope_base", 500000.0}, {"dropout", 0.0}, {"attn_dropout", false}};
    for (const auto &[key, value] : changes) {
      nlohmann::json j = base_config(attention);
      j[key] = value;
      INFO(attention << ": " << key);
      CHECK(moas::architecture_difference(moas::from_json(j.dump(), "f"), model).find(key) != std::string::npos);
    }
  }
  nlohmann::json j = base_config("moas");
  j["moas_aux_weight"] = 0.5;
  CHECK(moas::architecture_difference(moas::from_json(j.dump(), "f"), moas::from_json(base_config("moas").dump(), "m"))
            .find("aux_weight") != std::string::npos);
}
