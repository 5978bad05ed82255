#include "config/config.hpp"

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "base/error.hpp"
#include "config/struct_size.hpp"
#include "cuda_host/cuda_loader.hpp"

namespace moas {

namespace {

// The smallest struct_size accepted: the fields of libmoas 0.1.0. Later fields take their defaults when the
// caller's struct ends before them.
constexpr size_t kConfigV1Size = offsetof(moas_model_config, moas_mode);

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
  c.moas_mode = MOAS_MODE_SOFT;
  c.moas_n_branches = 3;
  c.moas_branch_kv_heads[0] = 0;  // n_head: MHA
  c.moas_branch_kv_heads[1] = 2;
  c.moas_branch_kv_heads[2] = 1;
  c.moas_branch_kv_heads[3] = 0;
  c.moas_aux_weight = 0.01f;
  c.head_selection.strategy = MOAS_HEADS_ALL;
  c.head_selection.load_balance_weight = 0.01f;
  c.head_selection.gate_variant = MOAS_MOH_GATES_REFERENCE;
  c.cope_max_pos = 64;
  c.window_size = 0;
  c.matmul_precision = MOAS_MATMUL_FP32;
  return c;
}

void check(bool ok, const std::string &message) { MOAS_REQUIRE(ok, MOAS_ERR_INVALID_CONFIG, message); }

// Bounds that keep every size computation far from overflow and every allocation plausible.
constexpr int64_t kMaxDim = 1 << 20;

}  // namespace

void fill_default(moas_model_config *cfg) { write_known_fields(cfg, defaults()); }

namespace {

MoasSettings validate_moas(const moas_model_config &in) {
  const int64_t H = in.n_head;
  MoasSettings m;
  check(in.moas_mode == MOAS_MODE_STATIC || in.moas_mode == MOAS_MODE_SOFT || in.moas_mode == MOAS_MODE_TOP1,
        "moas_mode is " + std::to_string(in.moas_mode) + ": use MOAS_MODE_STATIC, MOAS_MODE_SOFT or MOAS_MODE_TOP1");
  m.mode = (MoasMode)in.moas_mode;
  check(in.moas_n_branches >= 1 && in.moas_n_branches <= MOAS_MAX_BRANCHES,
        "moas_n_branches is " + std::to_string(in.moas_n_branches) + ": MoAS needs 1 to " +
            std::to_string(MOAS_MAX_BRANCHES) + " branches");
  m.branch_kv_heads.clear();
  for (int32_t k = 0; k < in.moas_n_branches; k++) {
    const int64_t kv = in.moas_branch_kv_heads[k] == 0 ? H : in.moas_branch_kv_heads[k];
    check(kv >= 1 && kv <= H && H % kv == 0,
          "moas_branch_kv_heads[" + std::to_string(k) + "] is " + std::to_string(kv) + ": a branch's kv heads must "
          "divide n_head (" + std::to_string(H) + "); use 0 for MHA, 1 for MQA or a divisor for GQA");
    m.branch_kv_heads.push_back(kv);
  }
  check(in.n_kv_head == in.n_head,
        "n_kv_head is " + std::to_string(in.n_kv_head) + " but MoAS branches take their kv heads from "
        "moas_branch_kv_heads: leave n_kv_head = n_head");
  check(std::isfinite(in.moas_aux_weight) && in.moas_aux_weight >= 0,
        "moas_aux_weight is " + std::to_string(in.moas_aux_weight) + ": it must be finite and >= 0");
  check(m.mode == MoasMode::Static || in.n_embd >= 4,
        "the MoAS router is C -> C/4 -> S: n_embd must be at least 4");
  m.aux_weight = in.moas_aux_weight;
  return m;
}

HeadSelection validate_heads(const moas_model_config &in) {
  const moas_head_selection &hs = in.head_selection;
  const int64_t H = in.n_head;
  HeadSelection out;
  check(hs.strategy == MOAS_HEADS_ALL || hs.strategy == MOAS_HEADS_MIXTURE || hs.strategy == MOAS_HEADS_STATIC_PRUNING,
        "head_selection.strategy is " + std::to_string(hs.strategy) +
            ": use MOAS_HEADS_ALL, MOAS_HEADS_MIXTURE or MOAS_HEADS_STATIC_PRUNING");
  out.strategy = (HeadStrategy)hs.strategy;
  if (out.strategy == HeadStrategy::StaticPruning) {
    check(hs.num_active_heads >= 1 && hs.num_active_heads <= H,
          "head_selection.num_active_heads is " + std::to_string(hs.num_active_heads) +
              ": StaticPruning keeps 1 to n_head (" + std::to_string(H) + ") heads");
    out.num_active_heads = hs.num_active_heads;
  }
  if (out.strategy == HeadStrategy::MixtureOfHeads) {
    check(hs.num_shared_heads >= 0 && hs.num_shared_heads <= H,
          "head_selection.num_shared_heads is " + std::to_string(hs.num_shared_heads) + ": it must be in [0, n_head = " +
              std::to_string(H) + "]");
    const int64_t routed = H - hs.num_shared_heads;
    check(hs.num_active_routed_heads >= 0 && hs.num_active_routed_heads <= routed,
          "head_selection.num_active_routed_heads is " + std::to_string(hs.num_active_routed_heads) +
              ": K must be in [0, n_head - num_shared_heads = " + std::to_string(routed) + "]");
    check(hs.num_shared_heads + hs.num_active_routed_heads > 0,
          "head_selection has no shared and no active routed heads: every token would attend to nothing; set "
          "num_shared_heads or num_active_routed_heads");
    check(routed <= MOAS_MAX_ROUTES, "MixtureOfHeads routes at most " + std::to_string(MOAS_MAX_ROUTES) +
                                         " heads: raise num_shared_heads");
    check(std::isfinite(hs.load_balance_weight) && hs.load_balance_weight >= 0,
          "head_selection.load_balance_weight is " + std::to_string(hs.load_balance_weight) +
              ": it must be finite and >= 0");
    check(hs.gate_variant == MOAS_MOH_GATES_REFERENCE || hs.gate_variant == MOAS_MOH_GATES_PAPER,
          "head_selection.gate_variant is " + std::to_string(hs.gate_variant) +
              ": use MOAS_MOH_GATES_REFERENCE or MOAS_MOH_GATES_PAPER");
    out.num_shared_heads = hs.num_shared_heads;
    out.num_active_routed_heads = hs.num_active_routed_heads;
    out.load_balance_weight = hs.load_balance_weight;
    out.reference_gates = hs.gate_variant == MOAS_MOH_GATES_REFERENCE;
  }
  return out;
}

}  // namespace

ModelConfig validate(const moas_model_config &caller) {
  const moas_model_config in = read_known_fields(caller, defaults(), kConfigV1Size, "moas_model_config");
  MOAS_REQUIRE(in.abi_version == MOAS_ABI_VERSION, MOAS_ERR_ABI_MISMATCH,
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
  check(in.position == MOAS_POSITION_LEARNED || in.position == MOAS_POSITION_ROPE || in.position == MOAS_POSITION_COPE,
        "position is " + std::to_string(in.position) +
            ": use MOAS_POSITION_LEARNED, MOAS_POSITION_ROPE or MOAS_POSITION_COPE");
  check(in.attention == MOAS_ATTENTION_SCHEME || in.attention == MOAS_ATTENTION_MOAS ||
            in.attention == MOAS_ATTENTION_MOH,
        "attention is " + std::to_string(in.attention) +
            ": use MOAS_ATTENTION_SCHEME, MOAS_ATTENTION_MOAS or MOAS_ATTENTION_MOH");
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
  if (in.position == MOAS_POSITION_COPE)
    check(in.cope_max_pos >= 1 && in.cope_max_pos <= kMaxDim,
          "cope_max_pos is " + std::to_string(in.cope_max_pos) +
              " but position is MOAS_POSITION_COPE: give each head 1 to 2^20 positions (default 64)");
  check(in.window_size >= 0, "window_size is " + std::to_string(in.window_size) +
                                 ": use 0 (full causal) or w >= 1 (query i sees keys i - w .. i)");
  check(in.n_threads >= 0 && in.n_threads <= 4096,
        "n_threads is " + std::to_string(in.n_threads) + ": use 0 (all cores) or a positive count");
  check(in.device == MOAS_DEVICE_CPU || in.device == MOAS_DEVICE_CUDA,
        "device is " + std::to_string(in.device) + ": use MOAS_DEVICE_CPU or MOAS_DEVICE_CUDA");
  if (in.device == MOAS_DEVICE_CUDA)  // says why it cannot run
    require_cuda_device(in.device_index, head_dim, in.block_size, in.window_size,
                        in.position == MOAS_POSITION_COPE ? in.cope_max_pos : 0);
  check(in.matmul_precision == MOAS_MATMUL_FP32 || in.matmul_precision == MOAS_MATMUL_TF32 ||
            in.matmul_precision == MOAS_MATMUL_BF16,
        "matmul_precision is " + std::to_string(in.matmul_precision) +
            ": use MOAS_MATMUL_FP32, MOAS_MATMUL_TF32 or MOAS_MATMUL_BF16");
  check(in.reserved0 == 0 && in.reserved1 == 0 && in.reserved2 == 0, "reserved0, reserved1 and reserved2 must be 0");

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
  c.cope_max_pos = in.cope_max_pos;
  c.window = in.window_size;
  c.seed = in.seed;
  c.n_threads = in.n_threads;
  c.device = in.device;
  c.device_index = in.device_index;
  c.matmul_precision = in.matmul_precision;
  c.attention = (AttentionKind)in.attention;
  if (c.attention == AttentionKind::Moas) c.moas = validate_moas(in);
  if (c.attention == AttentionKind::Moh) c.heads = validate_heads(in);
  check(c.attention == AttentionKind::Moh || in.head_selection.strategy == MOAS_HEADS_ALL,
        "head_selection.strategy is " + std::to_string(in.head_selection.strategy) +
            " but attention is not MOAS_ATTENTION_MOH: set attention = MOAS_ATTENTION_MOH to select heads");
  return c;
}

double ModelConfig::aux_weight() const {
  if (attention == AttentionKind::Moas && moas.mode != MoasMode::Static) return moas.aux_weight;
  if (attention == AttentionKind::Moh && heads.strategy == HeadStrategy::MixtureOfHeads)
    return heads.load_balance_weight;
  return 0.0;
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
  full.cope_max_pos = (int32_t)c.cope_max_pos;
  full.window_size = (int32_t)c.window;
  full.seed = c.seed;
  full.n_threads = c.n_threads;
  full.device = c.device;
  full.device_index = c.device_index;
  full.matmul_precision = c.matmul_precision;
  full.attention = (int32_t)c.attention;
  routing_to_c(c, &full);
  write_known_fields(out, full);
}

namespace {
const char *norm_name(NormKind k) { return k == NormKind::RMSNorm ? "rmsnorm" : "layernorm"; }
const char *mlp_name(MlpKind k) { return k == MlpKind::SwiGlu ? "swiglu" : "gelu"; }
const char *position_name(PositionKind k) {
  return k == PositionKind::Rope ? "rope" : k == PositionKind::Cope ? "cope" : "learned";
}
const char *attention_name(AttentionKind k) {
  return k == AttentionKind::Moas ? "moas" : k == AttentionKind::Moh ? "moh" : "scheme";
}
const char *mode_name(MoasMode m) { return m == MoasMode::Static ? "static" : m == MoasMode::Top1 ? "top1" : "soft"; }
const char *strategy_name(HeadStrategy s) {
  return s == HeadStrategy::MixtureOfHeads ? "mixture" : s == HeadStrategy::StaticPruning ? "static_pruning" : "all";
}
const char *gates_name(bool reference) { return reference ? "reference" : "paper"; }
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
  if (c.position == PositionKind::Cope) j["cope_max_pos"] = c.cope_max_pos;
  j["window_size"] = c.window;
  j["attention"] = attention_name(c.attention);
  if (c.attention == AttentionKind::Moas) {
    j["moas_mode"] = mode_name(c.moas.mode);
    j["moas_branch_kv_heads"] = c.moas.branch_kv_heads;
    j["moas_aux_weight"] = c.moas.aux_weight;
  }
  if (c.attention == AttentionKind::Moh) {
    j["head_selection"] = {{"strategy", strategy_name(c.heads.strategy)},
                           {"num_shared_heads", c.heads.num_shared_heads},
                           {"num_active_routed_heads", c.heads.num_active_routed_heads},
                           {"num_active_heads", c.heads.num_active_heads},
                           {"load_balance_weight", c.heads.load_balance_weight},
                           {"gates", gates_name(c.heads.reference_gates)}};
  }
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
  // A string field that must be one of `names` (their index is the enum value).
  auto choice_in = [&](const nlohmann::json &obj, const char *key, std::initializer_list<const char *> names) {
    if (!obj.contains(key) || !obj[key].is_string()) bad(std::string("lacks string \"") + key + "\"");
    const std::string v = obj[key].get<std::string>();
    int32_t index = 0;
    std::string expected;
    for (const char *name : names) {
      if (v == name) return index;
      expected += (index++ ? ", \"" : "\"") + std::string(name) + "\"";
    }
    fail(MOAS_ERR_CHECKPOINT_CONFIG,
         origin + ": metadata \"config\" \"" + key + "\" is \"" + v.substr(0, 80) + "\", expected one of " + expected);
  };
  auto choice = [&](const char *key, std::initializer_list<const char *> names) { return choice_in(j, key, names); };
  // What the value of `key` is, for messages that say why it was refused.
  auto kind_of = [](const nlohmann::json &v) -> std::string {
    if (v.is_string()) return "a string";
    if (v.is_boolean()) return "a boolean";
    if (v.is_number_float()) return "the number " + v.dump();
    if (v.is_number()) return "the integer " + v.dump();
    if (v.is_null()) return "null";
    return v.is_array() ? "a list" : "an object";
  };
  auto wrong = [&](const nlohmann::json &obj, const char *key, const char *expected) {
    bad(std::string("\"") + key + "\" is " + (obj.contains(key) ? kind_of(obj[key]) : "missing") + ", expected " +
        expected);
  };
  auto number = [&](const nlohmann::json &obj, const char *key) {
    if (!obj.contains(key) || !obj[key].is_number()) wrong(obj, key, "a number");
    const double v = obj[key].get<double>();
    if (!std::isfinite((float)v)) wrong(obj, key, "a number a float can hold");
    return (float)v;
  };
  auto in_int32 = [&](const nlohmann::json &v, const std::string &what) {
    // A JSON integer past int64 arrives as unsigned; either way it must fit the C struct's int32_t.
    const bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= (uint64_t)INT32_MAX
                                             : v.get<int64_t>() >= INT32_MIN && v.get<int64_t>() <= INT32_MAX;
    if (!fits) bad(what + " " + v.dump() + " is out of range (32-bit integers only)");
    return (int32_t)v.get<int64_t>();
  };
  auto count_in = [&](const nlohmann::json &obj, const char *key) {
    if (!obj.contains(key) || !obj[key].is_number_integer()) wrong(obj, key, "an integer");
    return in_int32(obj[key], std::string("\"") + key + "\"");
  };
  auto integer = [&](const char *key, int32_t *field) { *field = count_in(j, key); };
  auto boolean = [&](const char *key) {
    if (!j.contains(key) || !j[key].is_boolean()) wrong(j, key, "true or false");
    return j[key].get<bool>();
  };
  // Every key this version writes; any other key describes math this version would not do.
  static const std::set<std::string> kKnown = {
      "vocab_size", "block_size", "n_layer",   "n_head",         "n_kv_head",           "n_embd",
      "mlp_hidden", "norm",       "mlp",       "position",       "cope_max_pos",        "window_size",
      "attention",  "moas_mode",  "moas_branch_kv_heads",        "moas_aux_weight",     "head_selection",
      "bias",       "dropout",    "attn_dropout", "rope_base",   "seed"};
  for (const auto &item : j.items())
    if (!kKnown.count(item.key()))
      bad("has the unknown field \"" + item.key().substr(0, 80) + "\" (written by a newer libmoas?)");
  integer("vocab_size", &c.vocab_size);
  integer("block_size", &c.block_size);
  integer("n_layer", &c.n_layer);
  integer("n_head", &c.n_head);
  integer("n_kv_head", &c.n_kv_head);
  integer("n_embd", &c.n_embd);
  integer("mlp_hidden", &c.mlp_hidden);
  c.norm = choice("norm", {"layernorm", "rmsnorm"});
  c.mlp = choice("mlp", {"gelu", "swiglu"});
  c.position = choice("position", {"learned", "rope", "cope"});
  // Checkpoints before libmoas 0.3.0 have neither key: they ran full causal attention without CoPE.
  if (j.contains("cope_max_pos")) integer("cope_max_pos", &c.cope_max_pos);
  if (j.contains("window_size")) integer("window_size", &c.window_size);
  c.attention = choice("attention", {"scheme", "moas", "moh"});
  if (c.attention == MOAS_ATTENTION_MOAS) {
    c.moas_mode = choice("moas_mode", {"static", "soft", "top1"});
    const nlohmann::json &kv = j.contains("moas_branch_kv_heads") ? j["moas_branch_kv_heads"] : nlohmann::json();
    if (!kv.is_array() || kv.empty() || kv.size() > MOAS_MAX_BRANCHES)
      bad("\"moas_branch_kv_heads\" is not a list of 1 to " + std::to_string(MOAS_MAX_BRANCHES) + " integers");
    c.moas_n_branches = (int32_t)kv.size();
    for (size_t k = 0; k < kv.size(); k++) {
      if (!kv[k].is_number_integer()) bad("\"moas_branch_kv_heads\" holds " + kind_of(kv[k]) + ", not an integer");
      c.moas_branch_kv_heads[k] = in_int32(kv[k], "\"moas_branch_kv_heads\" entry");
    }
    c.moas_aux_weight = number(j, "moas_aux_weight");
  }
  if (c.attention == MOAS_ATTENTION_MOH) {
    if (!j.contains("head_selection") || !j["head_selection"].is_object()) wrong(j, "head_selection", "an object");
    const nlohmann::json &hs = j["head_selection"];
    c.head_selection.strategy = choice_in(hs, "strategy", {"all", "mixture", "static_pruning"});
    c.head_selection.num_shared_heads = count_in(hs, "num_shared_heads");
    c.head_selection.num_active_routed_heads = count_in(hs, "num_active_routed_heads");
    c.head_selection.num_active_heads = count_in(hs, "num_active_heads");
    c.head_selection.load_balance_weight = number(hs, "load_balance_weight");
    // A checkpoint without the gate variant predates the choice: only the reference gates existed.
    c.head_selection.gate_variant = hs.contains("gates") ? choice_in(hs, "gates", {"reference", "paper"}) : 0;
  }
  c.bias = boolean("bias");
  // Checkpoints before 0.2.0 lack these: they were written with the defaults.
  if (j.contains("dropout")) c.dropout = number(j, "dropout");
  if (j.contains("attn_dropout")) c.attn_dropout = boolean("attn_dropout");
  if (j.contains("rope_base")) c.rope_base = number(j, "rope_base");
  if (j.contains("seed")) {
    if (!j["seed"].is_number_unsigned()) wrong(j, "seed", "a non-negative integer");
    c.seed = j["seed"].get<uint64_t>();
  }
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
// Named as the config JSON names the field, so a message points at what to look for in the file.
#define MOAS_COMPARE_AS(field, name, show) \
  if (a.field != b.field) return differ(name, show(a.field), show(b.field));
#define MOAS_COMPARE(field, show) MOAS_COMPARE_AS(field, #field, show)
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
  auto real = [](double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.9g", v);
    return std::string(text);
  };
  if (a.position == PositionKind::Cope) {
    MOAS_COMPARE(cope_max_pos, num)
  }
  if (a.position == PositionKind::Rope) {
    MOAS_COMPARE(rope_base, real)
  }
  MOAS_COMPARE(dropout, real)
  MOAS_COMPARE(attn_dropout, num)
  MOAS_COMPARE_AS(window, "window_size", num)
  MOAS_COMPARE(bias, num)
  MOAS_COMPARE(attention, attention_name)
  if (a.attention == AttentionKind::Moas) {
    auto list = [](const std::vector<int64_t> &v) {
      std::string s = "[";
      for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + std::to_string(v[i]);
      return s + "]";
    };
    MOAS_COMPARE_AS(moas.mode, "moas_mode", mode_name)
    MOAS_COMPARE_AS(moas.branch_kv_heads, "moas_branch_kv_heads", list)
    MOAS_COMPARE_AS(moas.aux_weight, "moas_aux_weight", real)
  }
  if (a.attention == AttentionKind::Moh) {
    MOAS_COMPARE_AS(heads.strategy, "head_selection.strategy", strategy_name)
    MOAS_COMPARE_AS(heads.num_shared_heads, "head_selection.num_shared_heads", num)
    MOAS_COMPARE_AS(heads.num_active_routed_heads, "head_selection.num_active_routed_heads", num)
    MOAS_COMPARE_AS(heads.num_active_heads, "head_selection.num_active_heads", num)
    MOAS_COMPARE_AS(heads.reference_gates, "head_selection.gates", gates_name)
    MOAS_COMPARE_AS(heads.load_balance_weight, "head_selection.load_balance_weight", real)
  }
#undef MOAS_COMPARE
#undef MOAS_COMPARE_AS
  return "";
}

}  // namespace moas
