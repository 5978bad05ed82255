#include "config/layer_config.hpp"

#include <cstring>
#include <string>

#include "base/error.hpp"
#include "config/struct_size.hpp"

namespace moas {

namespace {

moas_layer_config layer_defaults() {
  moas_layer_config d;
  std::memset(&d, 0, sizeof d);
  d.abi_version = MOAS_ABI_VERSION;
  d.n_embd = 128;
  d.n_head = 8;
  d.n_kv_head = 4;
  d.max_seq_len = 80;
  d.attention = MOAS_ATTENTION_SCHEME;
  d.position = MOAS_POSITION_LEARNED;
  d.rope_base = 10000.0f;
  d.cope_max_pos = 64;
  d.window_size = 0;
  d.residual = 1;
  d.bias = 0;
  d.dropout = 0.0f;
  d.moas_mode = MOAS_MODE_SOFT;
  d.moas_n_branches = 3;
  d.moas_branch_kv_heads[1] = 2;  // {0 (= n_head: MHA), GQA-2, MQA}
  d.moas_branch_kv_heads[2] = 1;
  d.moas_aux_weight = 0.01f;
  d.head_selection.strategy = MOAS_HEADS_ALL;
  d.head_selection.load_balance_weight = 0.01f;
  d.head_selection.gate_variant = MOAS_MOH_GATES_REFERENCE;
  d.n_threads = 0;
  d.seed = 1337;
  d.device = MOAS_DEVICE_CPU;
  d.matmul_precision = MOAS_MATMUL_FP32;
  return d;
}

// A field the layer would ignore is refused rather than dropped, so a caller never believes a setting took effect
// that did not. Each is compared with its default, which is what a caller who did not mean it leaves there.
void refuse_meaningless_fields(const moas_layer_config &in) {
  const moas_layer_config d = layer_defaults();
  auto refuse_unless = [](bool meaningful, const std::string &message) {
    MOAS_REQUIRE(meaningful, MOAS_ERR_INVALID_CONFIG, message);
  };
  refuse_unless(in.window_size < in.max_seq_len,
                "window_size " + std::to_string(in.window_size) + " is not below max_seq_len " +
                    std::to_string(in.max_seq_len) + ": every position would see all earlier ones anyway; use 0 "
                    "(full causal) or a window below max_seq_len");
  refuse_unless(in.position == MOAS_POSITION_ROPE || in.rope_base == d.rope_base,
                "rope_base is set but position is not MOAS_POSITION_ROPE: set position to MOAS_POSITION_ROPE or "
                "leave rope_base at its default");
  refuse_unless(in.position == MOAS_POSITION_COPE || in.cope_max_pos == d.cope_max_pos,
                "cope_max_pos is set but position is not MOAS_POSITION_COPE: set position to MOAS_POSITION_COPE or "
                "leave cope_max_pos at its default");
  const bool moas_default = in.moas_mode == d.moas_mode && in.moas_n_branches == d.moas_n_branches &&
                            std::memcmp(in.moas_branch_kv_heads, d.moas_branch_kv_heads,
                                        sizeof d.moas_branch_kv_heads) == 0 &&
                            in.moas_aux_weight == d.moas_aux_weight;
  refuse_unless(in.attention == MOAS_ATTENTION_MOAS || moas_default,
                "moas_mode / moas_n_branches / moas_branch_kv_heads / moas_aux_weight are set but attention is not "
                "MOAS_ATTENTION_MOAS: set attention to MOAS_ATTENTION_MOAS or leave them at their defaults");
  const moas_head_selection &hs = in.head_selection, &dhs = d.head_selection;
  const bool heads_default = hs.strategy == dhs.strategy && hs.num_shared_heads == dhs.num_shared_heads &&
                             hs.num_active_routed_heads == dhs.num_active_routed_heads &&
                             hs.num_active_heads == dhs.num_active_heads &&
                             hs.load_balance_weight == dhs.load_balance_weight && hs.gate_variant == dhs.gate_variant;
  refuse_unless(in.attention == MOAS_ATTENTION_MOH || heads_default,
                "head_selection is set but attention is not MOAS_ATTENTION_MOH: set attention to MOAS_ATTENTION_MOH "
                "or leave head_selection at its default");
  refuse_unless(in.device == MOAS_DEVICE_CUDA || in.device_index == 0,
                "device_index is " + std::to_string(in.device_index) + " but device is not MOAS_DEVICE_CUDA: use "
                "device_index 0 on the CPU");
  refuse_unless(in.device == MOAS_DEVICE_CUDA || in.matmul_precision == MOAS_MATMUL_FP32,
                "matmul_precision is " + std::to_string(in.matmul_precision) + " but the CPU backend computes every "
                "product in fp32: use MOAS_MATMUL_FP32 with MOAS_DEVICE_CPU, or MOAS_DEVICE_CUDA");
}

}  // namespace

void fill_layer_default(moas_layer_config *cfg) { write_known_fields(cfg, layer_defaults()); }

ModelConfig validate_layer(const moas_layer_config &caller) {
  const moas_layer_config in = read_known_fields(caller, layer_defaults(), kLayerConfigV1Size, "moas_layer_config");
  MOAS_REQUIRE(in.abi_version == MOAS_ABI_VERSION, MOAS_ERR_ABI_MISMATCH,
               "moas_layer_config.abi_version is " + std::to_string(in.abi_version) + " but this library has ABI " +
               std::to_string(MOAS_ABI_VERSION) + ": fill the struct with moas_layer_config_default");
  MOAS_REQUIRE(in.max_seq_len >= 1 && in.max_seq_len <= (1 << 20), MOAS_ERR_INVALID_CONFIG,
               "max_seq_len is " + std::to_string(in.max_seq_len) + ": it must be in [1, 2^20]");
  MOAS_REQUIRE(in.reserved0 == 0, MOAS_ERR_INVALID_CONFIG, "reserved0 must be 0");
  MOAS_REQUIRE(in.residual == 0 || in.residual == 1, MOAS_ERR_INVALID_CONFIG,
               "residual is " + std::to_string(in.residual) + ": use 1 (y = x + Attn(x)) or 0 (y = Attn(x))");
  refuse_meaningless_fields(in);
  moas_model_config m;
  m.struct_size = sizeof m;
  fill_default(&m);
  m.vocab_size = 1;  // the layer has no embedding; any valid value
  m.block_size = in.max_seq_len;
  m.n_layer = 1;
  m.n_head = in.n_head;
  // MoAS branches take their kv heads from moas_branch_kv_heads; the model config asks for n_kv_head = n_head there.
  m.n_kv_head = in.attention == MOAS_ATTENTION_MOAS ? in.n_head : in.n_kv_head;
  m.n_embd = in.n_embd;
  m.position = in.position;
  m.attention = in.attention;
  m.bias = in.bias;
  m.dropout = in.dropout;
  m.attn_dropout = 1;
  m.rope_base = in.rope_base;
  m.seed = in.seed;
  m.n_threads = in.n_threads;
  m.device = in.device;
  m.device_index = in.device_index;
  m.matmul_precision = in.matmul_precision;
  m.moas_mode = in.moas_mode;
  m.moas_n_branches = in.moas_n_branches;
  std::memcpy(m.moas_branch_kv_heads, in.moas_branch_kv_heads, sizeof m.moas_branch_kv_heads);
  m.moas_aux_weight = in.moas_aux_weight;
  m.head_selection = in.head_selection;
  m.cope_max_pos = in.cope_max_pos;
  m.window_size = in.window_size;
  return validate(m);
}

void to_layer_c(const ModelConfig &c, bool residual, moas_layer_config *out) {
  moas_layer_config full = layer_defaults();
  full.n_embd = (int32_t)c.n_embd;
  full.n_head = (int32_t)c.n_head;
  if (c.attention != AttentionKind::Moas) full.n_kv_head = (int32_t)c.n_kv_head;
  full.max_seq_len = (int32_t)c.block_size;
  full.attention = (int32_t)c.attention;
  full.position = (int32_t)c.position;
  full.rope_base = c.rope_base;
  full.cope_max_pos = (int32_t)c.cope_max_pos;
  full.window_size = (int32_t)c.window;
  full.residual = residual ? 1 : 0;
  full.bias = c.bias ? 1 : 0;
  full.dropout = c.dropout;
  routing_to_c(c, &full);
  full.n_threads = c.n_threads;
  full.seed = c.seed;
  full.device = c.device;
  full.device_index = c.device_index;
  full.matmul_precision = c.matmul_precision;
  write_known_fields(out, full);
}

}  // namespace moas
