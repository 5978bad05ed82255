#include "config.hpp"

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "error.hpp"

namespace moas {

namespace {

// The smallest struct_size accepted: every field of ABI version 1.
constexpr size_t kConfigV1Size = sizeof(moas_model_config);

moas_model_config defaults() {
  moas_model_config c;
  std::memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  c.abi_version = MOAS_ABI_VERSION;
  c.vocab_size = 65;
  c.block_size = 256;
  c.n_layer = 6;
  c.n_head = 6;
  c.n_kv_head = 6;
  c.n_embd = 384;
  c.mlp_hidden = 0;
  c.norm = MOAS_NORM_LAYERNORM;
  c.mlp = MOAS_MLP_GELU;
  c.position = MOAS_POSITION_LEARNED;
  c.attention = MOAS_ATTENTION_SCHEME;
  c.bias = 0;
  c.dropout = 0.2f;
  c.attn_dropout = 1;
  c.rope_base = 10000.0f;
  c.seed = 1337;
  c.n_threads = 0;
  c.device = MOAS_DEVICE_CPU;
  c.device_index = 0;
  return c;
}

void check(bool ok, const std::string &message) { require(ok, MOAS_ERR_INVALID_CONFIG, message); }

// Bounds that keep every size computation far from overflow and every allocation plausible.
constexpr int64_t kMaxDim = 1 << 20;

}  // namespace

void fill_default(moas_model_config *cfg) {
  const moas_model_config d = defaults();
  const size_t n = cfg->struct_size < sizeof d ? cfg->struct_size : sizeof d;
  const uint32_t caller_size = cfg->struct_size;
  std::memcpy(cfg, &d, n);
  cfg->struct_size = caller_size;
}

ModelConfig validate(const moas_model_config &in) {
  require(in.struct_size >= kConfigV1Size, MOAS_ERR_ABI_MISMATCH,
          "moas_model_config.struct_size is " + std::to_string(in.struct_size) + ", expected at least " +
              std::to_string(kConfigV1Size) + ": set struct_size = sizeof(moas_model_config) and call "
              "moas_model_config_default first");
  require(in.abi_version == MOAS_ABI_VERSION, MOAS_ERR_ABI_MISMATCH,
          "moas_model_config.abi_version is " + std::to_string(in.abi_version) + " but this libmoas has ABI " +
              std::to_string(MOAS_ABI_VERSION) + ": rebuild against the matching moas.h");

  auto positive = [](int64_t v, const char *name) {
    check(v >= 1 && v <= kMaxDim, std::string(name) + " is " + std::to_string(v) + ": it must be in [1, " +
                                      std::to_string(kMaxDim) + "]");
  };
  positive(in.vocab_size, "vocab_size");
  positive(in.block_size, "block_size");
  positive(in.n_layer, "n_layer");
  positive(in.n_head, "n_head");
  positive(in.n_kv_head, "n_kv_head");
  positive(in.n_embd, "n_embd");
  check(in.n_layer <= 1024, "n_layer is " + std::to_string(in.n_layer) + ": at most 1024 layers are supported");
  check(in.n_embd % in.n_head == 0, "n_embd (" + std::to_string(in.n_embd) + ") is not divisible by n_head (" +
                                        std::to_string(in.n_head) + "): choose n_head dividing n_embd");
  check(in.n_kv_head <= in.n_head && in.n_head % in.n_kv_head == 0,
        "n_kv_head (" + std::to_string(in.n_kv_head) + ") must divide n_head (" + std::to_string(in.n_head) +
            "): use n_head for MHA, 1 for MQA, or a divisor for GQA");
  check(in.mlp_hidden >= 0 && in.mlp_hidden <= kMaxDim,
        "mlp_hidden is " + std::to_string(in.mlp_hidden) + ": use 0 (= 4 * n_embd) or a width in [1, 2^20]");
  check(in.norm == MOAS_NORM_LAYERNORM || in.norm == MOAS_NORM_RMSNORM,
        "norm is " + std::to_string(in.norm) + ": use MOAS_NORM_LAYERNORM or MOAS_NORM_RMSNORM");
  check(in.mlp == MOAS_MLP_GELU || in.mlp == MOAS_MLP_SWIGLU,
        "mlp is " + std::to_string(in.mlp) + ": use MOAS_MLP_GELU or MOAS_MLP_SWIGLU");
  check(in.position == MOAS_POSITION_LEARNED || in.position == MOAS_POSITION_ROPE,
        "position is " + std::to_string(in.position) + ": use MOAS_POSITION_LEARNED or MOAS_POSITION_ROPE");
  check(in.attention == MOAS_ATTENTION_SCHEME,
        "attention is " + std::to_string(in.attention) + ": this libmoas supports MOAS_ATTENTION_SCHEME");
  check(in.bias == 0 || in.bias == 1, "bias is " + std::to_string(in.bias) + ": use 0 or 1");
  check(in.attn_dropout == 0 || in.attn_dropout == 1,
        "attn_dropout is " + std::to_string(in.attn_dropout) + ": use 0 or 1");
  check(std::isfinite(in.dropout) && in.dropout >= 0.0f && in.dropout < 1.0f,
        "dropout is " + std::to_string(in.dropout) + ": it must be in [0, 1)");
  const int64_t head_dim = in.n_embd / in.n_head;
  if (in.position == MOAS_POSITION_ROPE) {
    check(head_dim % 2 == 0, "RoPE rotates pairs of head dimensions but n_embd / n_head = " +
                                 std::to_string(head_dim) + " is odd: choose an even head size");
    check(std::isfinite(in.rope_base) && in.rope_base > 1.0f,
          "rope_base is " + std::to_string(in.rope_base) + ": it must be a finite number > 1 (usually 10000)");
  }
  check(in.n_threads >= 0 && in.n_threads <= 4096,
        "n_threads is " + std::to_string(in.n_threads) + ": use 0 (all cores) or a positive count");
  check(in.device == MOAS_DEVICE_CPU || in.device == MOAS_DEVICE_CUDA,
        "device is " + std::to_string(in.device) + ": use MOAS_DEVICE_CPU or MOAS_DEVICE_CUDA");
  require(in.device == MOAS_DEVICE_CPU, MOAS_ERR_DEVICE_UNAVAILABLE,
          "no CUDA device: this libmoas was built without the CUDA backend; use MOAS_DEVICE_CPU");
  check(in.reserved0 == 0, "reserved0 must be 0");

  ModelConfig c;
  c.vocab_size = in.vocab_size;
  c.block_size = in.block_size;
  c.n_layer = in.n_layer;
  c.n_head = in.n_head;
  c.n_kv_head = in.n_kv_head;
  c.n_embd = in.n_embd;
  c.mlp_hidden = in.mlp_hidden == 0 ? 4 * (int64_t)in.n_embd : in.mlp_hidden;
  check(c.mlp_hidden <= kMaxDim, "4 * n_embd exceeds 2^20: set mlp_hidden explicitly");
  c.norm = (NormKind)in.norm;
  c.mlp = (MlpKind)in.mlp;
  c.position = (PositionKind)in.position;
  c.bias = in.bias != 0;
  c.dropout = in.dropout;
  c.attn_dropout = in.attn_dropout != 0;
  c.rope_base = in.rope_base;
  c.seed = in.seed;
  c.n_threads = in.n_threads;
  c.device = in.device;
  c.device_index = in.device_index;
  return c;
}

void to_c(const ModelConfig &c, moas_model_config *out) {
  moas_model_config full = defaults();
  full.vocab_size = (int32_t)c.vocab_size;
  full.block_size = (int32_t)c.block_size;
  full.n_layer = (int32_t)c.n_layer;
  full.n_head = (int32_t)c.n_head;
  full.n_kv_head = (int32_t)c.n_kv_head;
  full.n_embd = (int32_t)c.n_embd;
  full.mlp_hidden = (int32_t)c.mlp_hidden;
  full.norm = (int32_t)c.norm;
  full.mlp = (int32_t)c.mlp;
  full.position = (int32_t)c.position;
  full.bias = c.bias;
  full.dropout = c.dropout;
  full.attn_dropout = c.attn_dropout;
  full.rope_base = c.rope_base;
  full.seed = c.seed;
  full.n_threads = c.n_threads;
  full.device = c.device;
  full.device_index = c.device_index;
  const uint32_t caller_size = out->struct_size;
  std::memcpy(out, &full, caller_size < sizeof full ? caller_size : sizeof full);
  out->struct_size = caller_size;
}

namespace {
const char *norm_name(NormKind k) { return k == NormKind::RMSNorm ? "rmsnorm" : "layernorm"; }
const char *mlp_name(MlpKind k) { return k == MlpKind::SwiGlu ? "swiglu" : "gelu"; }
const char *position_name(PositionKind k) { return k == PositionKind::Rope ? "rope" : "learned"; }
}  // namespace

std::string to_json(const ModelConfig &c) {
  nlohmann::json j;
  j["vocab_size"] = c.vocab_size;
  j["block_size"] = c.block_size;
  j["n_layer"] = c.n_layer;
  j["n_head"] = c.n_head;
  j["n_kv_head"] = c.n_kv_head;
  j["n_embd"] = c.n_embd;
  j["mlp_hidden"] = c.mlp_hidden;
  j["norm"] = norm_name(c.norm);
  j["mlp"] = mlp_name(c.mlp);
  j["position"] = position_name(c.position);
  j["attention"] = "scheme";
  j["bias"] = c.bias;
  j["dropout"] = c.dropout;
  j["attn_dropout"] = c.attn_dropout;
  j["rope_base"] = c.rope_base;
  j["seed"] = c.seed;
  return j.dump();
}

ModelConfig from_json(const std::string &text, const std::string &origin) {
  auto bad = [&](const std::string &why) {
    fail(MOAS_ERR_CHECKPOINT_CONFIG, origin + ": metadata \"config\" " + why);
  };
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) bad("is not a JSON object");
  moas_model_config c = defaults();
  auto integer = [&](const char *key, int32_t *field) {
    if (!j.contains(key) || !j[key].is_number_integer()) bad(std::string("lacks integer \"") + key + "\"");
    const int64_t v = j[key].get<int64_t>();
    if (v < INT32_MIN || v > INT32_MAX) bad(std::string("\"") + key + "\" is out of range");
    *field = (int32_t)v;
  };
  auto choice = [&](const char *key, int32_t *field, const char *first, const char *second) {
    if (!j.contains(key) || !j[key].is_string()) bad(std::string("lacks string \"") + key + "\"");
    const std::string v = j[key].get<std::string>();
    if (v == first) *field = 0;
    else if (v == second) *field = 1;
    else bad(std::string("\"") + key + "\" is \"" + v + "\", expected \"" + first + "\" or \"" + second + "\"");
  };
  integer("vocab_size", &c.vocab_size);
  integer("block_size", &c.block_size);
  integer("n_layer", &c.n_layer);
  integer("n_head", &c.n_head);
  integer("n_kv_head", &c.n_kv_head);
  integer("n_embd", &c.n_embd);
  integer("mlp_hidden", &c.mlp_hidden);
  choice("norm", &c.norm, "layernorm", "rmsnorm");
  choice("mlp", &c.mlp, "gelu", "swiglu");
  choice("position", &c.position, "learned", "rope");
  if (!j.contains("attention") || j["attention"] != "scheme") bad("\"attention\" is not \"scheme\"");
  if (!j.contains("bias") || !j["bias"].is_boolean()) bad("lacks boolean \"bias\"");
  c.bias = j["bias"].get<bool>();
  if (j.contains("dropout") && j["dropout"].is_number()) c.dropout = j["dropout"].get<float>();
  if (j.contains("attn_dropout") && j["attn_dropout"].is_boolean()) c.attn_dropout = j["attn_dropout"].get<bool>();
  if (j.contains("rope_base") && j["rope_base"].is_number()) c.rope_base = j["rope_base"].get<float>();
  if (j.contains("seed") && j["seed"].is_number_unsigned()) c.seed = j["seed"].get<uint64_t>();
  try {
    return validate(c);
  } catch (const Error &e) {
    fail(MOAS_ERR_CHECKPOINT_CONFIG, origin + ": metadata \"config\" describes an invalid model: " + e.what());
  }
}

std::string architecture_difference(const ModelConfig &a, const ModelConfig &b) {
  auto differ = [](const char *name, const std::string &x, const std::string &y) {
    return std::string(name) + " is " + x + " in the file but " + y + " in the model";
  };
#define MOAS_COMPARE(field, show) \
  if (a.field != b.field) return differ(#field, show(a.field), show(b.field));
  auto num = [](int64_t v) { return std::to_string(v); };
  MOAS_COMPARE(vocab_size, num)
  MOAS_COMPARE(block_size, num)
  MOAS_COMPARE(n_layer, num)
  MOAS_COMPARE(n_head, num)
  MOAS_COMPARE(n_kv_head, num)
  MOAS_COMPARE(n_embd, num)
  MOAS_COMPARE(mlp_hidden, num)
  MOAS_COMPARE(norm, norm_name)
  MOAS_COMPARE(mlp, mlp_name)
  MOAS_COMPARE(position, position_name)
  MOAS_COMPARE(bias, num)
#undef MOAS_COMPARE
  return "";
}

}  // namespace moas
