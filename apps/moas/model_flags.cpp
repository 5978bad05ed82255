// The flags that describe the model, shared by `moas train` and `moas compare`, and the library config they make.
#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "errors.hpp"
#include "flag_spec.hpp"

namespace moas_cli {

const std::vector<std::string> kMoasModeNames = {"static", "soft", "top1"};
const std::vector<std::string> kNormNames = {"layernorm", "rmsnorm"};
const std::vector<std::string> kMlpNames = {"gelu", "swiglu"};
const std::vector<std::string> kPositionNames = {"learned", "rope", "cope"};
const std::vector<std::string> kDeviceNames = {"cpu", "cuda"};
const std::vector<std::string> kPrecisionNames = {"fp32", "tf32", "bf16"};

namespace {

int index_of(const std::vector<std::string> &names, const std::string &name) {
  const auto found = std::find(names.begin(), names.end(), name);
  if (found == names.end()) throw UsageError("unknown setting '" + name + "'");
  return (int)(found - names.begin());
}

}  // namespace

void add_model_flags(std::vector<OptionSpec> &t) {
  using S = OptionScope;
  using O = TrainOptions;
  t.push_back(number("layers", S::Model, &O::layers, 1, 1024, "transformer blocks"));
  t.push_back(number("heads", S::Model, &O::heads, 1, 4096, "query heads"));
  t.push_back(number("kv-heads", S::Model, &O::kv_heads, 1, 4096,
                     "key/value heads of --attention scheme or moh (auto: heads, MHA); compare: GQA's", true));
  t.push_back(number("width", S::Model, &O::width, 1, 1 << 20, "model width C (divisible by --heads)"));
  t.push_back(number("block", S::Model, &O::block, 1, 1 << 20, "context length T"));
  t.push_back(number("dropout", S::Model, &O::dropout, 0, 0.99, "dropout probability at every site"));
  t.push_back(text("attention", S::Model, &O::attention, {"scheme", "moas", "moh"},
                   "one scheme (MHA/GQA/MQA by --kv-heads), MoAS or MoH"));
  t.push_back(text("moas-mode", S::Model, &O::moas_mode, kMoasModeNames, "how MoAS mixes its branches"));
  t.push_back(text("branches", S::Model, &O::branches, {}, "kv heads per MoAS branch, e.g. 6,2,1 (0 = heads)"));
  t.push_back(number("aux-weight", S::Model, &O::aux_weight, 0, 1e6, "weight of the MoAS load-balance loss"));
  t.push_back(text("heads-strategy", S::Model, &O::heads_strategy, {"all", "mixture", "static-pruning"},
                   "MoH head selection"));
  t.push_back(number("shared-heads", S::Model, &O::shared_heads, 0, 4096,
                     "MoH mixture: always-active heads (auto: max(1, heads/4))", true));
  t.push_back(number("active-heads", S::Model, &O::active_heads, 0, 4096,
                     "MoH: K routed heads per token (mixture, auto 2/3 of the routed) or k kept (static-pruning, "
                     "auto heads/2)",
                     true));
  t.push_back(number("lb-weight", S::Model, &O::lb_weight, 0, 1e6, "weight of the MoH load-balance loss"));
  t.push_back(text("norm", S::Model, &O::norm, kNormNames, "normalisation"));
  t.push_back(text("mlp", S::Model, &O::mlp, kMlpNames, "MLP kind"));
  t.push_back(text("position", S::Model, &O::position, kPositionNames, "position encoding"));
  t.push_back(number("cope-max-pos", S::Model, &O::cope_max_pos, 1, 1 << 20,
                     "positions per head CoPE tells apart (with --position cope)"));
  t.push_back(number("window", S::Model, &O::window, 0, 1 << 20,
                     "sliding window w: position i attends to i-w .. i (0: every earlier position)"));
}

void set_model_defaults(TrainOptions &o) {
  moas_model_config model;
  model.struct_size = sizeof model;
  check_status(moas_model_config_default(&model), "moas_model_config_default");
  o.moas_mode = kMoasModeNames[(size_t)model.moas_mode];
  o.branches.clear();
  for (int k = 0; k < model.moas_n_branches; k++)
    o.branches += (k ? "," : "") + std::to_string(model.moas_branch_kv_heads[k]);
  o.aux_weight = decimal_of(model.moas_aux_weight);
  o.lb_weight = decimal_of(model.head_selection.load_balance_weight);
  o.norm = kNormNames[(size_t)model.norm];
  o.mlp = kMlpNames[(size_t)model.mlp];
  // Rotary positions: the small default model learns the generated task's lookups within its budget with them,
  // and hardly at all with learned positions (--paper keeps the reference's learned positions).
  o.position = "rope";
  o.cope_max_pos = model.cope_max_pos;
  o.window = model.window_size;
  o.seed = model.seed;
}

moas_model_config make_model_config(const TrainOptions &o, int vocab_size) {
  moas_model_config c;
  c.struct_size = sizeof c;
  check_status(moas_model_config_default(&c), "moas_model_config_default");
  c.vocab_size = vocab_size;
  c.block_size = o.block;
  c.n_layer = o.layers;
  c.n_head = o.heads;
  c.n_kv_head = o.kv_heads == kAuto ? o.heads : o.kv_heads;
  c.n_embd = o.width;
  c.dropout = (float)o.dropout;
  c.seed = o.seed;
  c.n_threads = o.threads;
  c.device = index_of(kDeviceNames, o.device);
  c.matmul_precision = index_of(kPrecisionNames, o.matmul_precision);
  c.norm = index_of(kNormNames, o.norm);
  c.mlp = index_of(kMlpNames, o.mlp);
  c.position = index_of(kPositionNames, o.position);
  c.cope_max_pos = o.cope_max_pos;
  c.window_size = o.window;
  if (o.attention == "moas") {
    c.attention = MOAS_ATTENTION_MOAS;
    c.n_kv_head = o.heads;  // branches carry their own kv heads
    c.moas_mode = index_of(kMoasModeNames, o.moas_mode);
    std::stringstream list(o.branches);
    std::string item;
    c.moas_n_branches = 0;
    while (std::getline(list, item, ',')) c.moas_branch_kv_heads[c.moas_n_branches++] = std::atoi(item.c_str());
    for (int k = c.moas_n_branches; k < MOAS_MAX_BRANCHES; k++) c.moas_branch_kv_heads[k] = 0;
    c.moas_aux_weight = (float)o.aux_weight;
  } else if (o.attention == "moh") {
    c.attention = MOAS_ATTENTION_MOH;
    moas_head_selection &hs = c.head_selection;
    hs.load_balance_weight = (float)o.lb_weight;
    if (o.heads_strategy == "mixture") {
      hs.strategy = MOAS_HEADS_MIXTURE;
      hs.num_shared_heads = o.shared_heads != kAuto ? o.shared_heads : std::max(1, o.heads / 4);
      const int routed = o.heads - hs.num_shared_heads;
      hs.num_active_routed_heads = o.active_heads != kAuto ? o.active_heads : std::max(1, 2 * routed / 3);
    } else if (o.heads_strategy == "static-pruning") {
      hs.strategy = MOAS_HEADS_STATIC_PRUNING;
      hs.num_active_heads = o.active_heads != kAuto ? o.active_heads : std::max(1, o.heads / 2);
    } else {
      hs.strategy = MOAS_HEADS_ALL;
    }
  } else {
    c.attention = MOAS_ATTENTION_SCHEME;
  }
  return c;
}

}  // namespace moas_cli
