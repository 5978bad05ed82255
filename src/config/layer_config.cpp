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

}  // namespace

void fill_layer_default(moas_layer_config *cfg) { write_known_fields(cfg, layer_defaults()); }

ModelConfig validate_layer(const moas_layer_config &caller) {
  const moas_layer_config in = read_known_fields(caller, layer_defaults(), kLayerConfigV1Size, "moas_layer_config");
  require(in.abi_version == MOAS_ABI_VERSION, MOAS_ERR_ABI_MISMATCH,
          "moas_layer_config.abi_version is " + std::to_string(in.abi_version) + " but this library has ABI " +
              std::to_string(MOAS_ABI_VERSION) + ": fill the struct with moas_layer_config_default");
  require(in.max_seq_len >= 1 && in.max_seq_len <= (1 << 20), MOAS_ERR_INVALID_CONFIG,
          "max_seq_len is " + std::to_string(in.max_seq_len) + ": it must be in [1, 2^20]");
  require(in.reserved0 == 0, MOAS_ERR_INVALID_CONFIG, "reserved0 must be 0");
  require(in.residual == 0 || in.residual == 1, MOAS_ERR_INVALID_CONFIG,
          "residual is " + std::to_string(in.residual) + ": use 1 (y = x + Attn(x)) or 0 (y = Attn(x))");
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

}  // namespace moas
