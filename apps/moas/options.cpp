#include "options.hpp"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <variant>

#include "errors.hpp"

namespace moas_cli {

namespace {

using Field = std::variant<int TrainOptions::*, double TrainOptions::*, uint64_t TrainOptions::*,
                           std::string TrainOptions::*, bool TrainOptions::*>;

struct OptionSpec {
  OptionSpec(const char *name_, OptionScope scope_, Field field_) : name(name_), scope(scope_), field(field_) {}
  const char *name;
  OptionScope scope;
  Field field;
  double low = 0, high = 0;          // inclusive bounds of a number
  bool allows_auto = false;          // a number that may be "auto" (kAuto)
  std::vector<std::string> choices;  // the values a text may take; empty: any
  bool for_compare = true;           // compare picks this itself when false
  bool allows_empty = false;         // a text whose empty value means something (--data: the generated task)
  const char *help = "";
};

// A number in [low, high], of an int or a double field.
template <typename Number>
OptionSpec number(const char *name, OptionScope scope, Number TrainOptions::*field, double low, double high,
                  const char *help, bool allows_auto = false) {
  OptionSpec s{name, scope, field};
  s.low = low;
  s.high = high;
  s.allows_auto = allows_auto;
  s.help = help;
  return s;
}

OptionSpec text(const char *name, OptionScope scope, std::string TrainOptions::*field,
                std::vector<std::string> choices, const char *help, bool for_compare = true) {
  OptionSpec s{name, scope, field};
  s.choices = std::move(choices);
  s.for_compare = for_compare;
  s.help = help;
  return s;
}

OptionSpec toggle(const char *name, OptionScope scope, bool TrainOptions::*field, const char *help,
                  bool for_compare = true) {
  OptionSpec s{name, scope, field};
  s.for_compare = for_compare;
  s.help = help;
  return s;
}

constexpr double kBig = 1e9;

const std::vector<OptionSpec> &option_table() {
  using S = OptionScope;
  using O = TrainOptions;
  static const std::vector<OptionSpec> table = [] {
    std::vector<OptionSpec> t;
    t.push_back(number("layers", S::Model, &O::layers, 1, 1024, "transformer blocks"));
    t.push_back(number("heads", S::Model, &O::heads, 1, 4096, "query heads"));
    t.push_back(number("kv-heads", S::Model, &O::kv_heads, 1, 4096,
                        "key/value heads of --attention scheme or moh (auto: heads, MHA); compare: GQA's", true));
    t.push_back(number("width", S::Model, &O::width, 1, 1 << 20, "model width C (divisible by --heads)"));
    t.push_back(number("block", S::Model, &O::block, 1, 1 << 20, "context length T"));
    t.push_back(number("dropout", S::Model, &O::dropout, 0, 0.99, "dropout probability at every site"));
    t.push_back(text("attention", S::Model, &O::attention, {"scheme", "moas", "moh"},
                     "one scheme (MHA/GQA/MQA by --kv-heads), MoAS or MoH", false));
    t.push_back(text("moas-mode", S::Model, &O::moas_mode, {"static", "soft", "top1"}, "how MoAS mixes its branches",
                     false));
    t.push_back(text("branches", S::Model, &O::branches, {}, "kv heads per MoAS branch, e.g. 6,2,1 (0 = heads)"));
    t.push_back(number("aux-weight", S::Model, &O::aux_weight, 0, 1e6, "weight of the MoAS load-balance loss"));
    t.push_back(text("heads-strategy", S::Model, &O::heads_strategy, {"all", "mixture", "static-pruning"},
                     "MoH head selection", false));
    t.push_back(number("shared-heads", S::Model, &O::shared_heads, 0, 4096,
                        "MoH mixture: always-active heads (auto: max(1, heads/4))", true));
    t.push_back(number("active-heads", S::Model, &O::active_heads, 0, 4096,
                        "MoH: K routed heads per token (mixture, auto 2/3 of the routed) or k kept (static-pruning, "
                        "auto heads/2)",
                        true));
    t.push_back(number("lb-weight", S::Model, &O::lb_weight, 0, 1e6, "weight of the MoH load-balance loss"));
    t.push_back(text("norm", S::Model, &O::norm, {"layernorm", "rmsnorm"}, "normalisation"));
    t.push_back(text("mlp", S::Model, &O::mlp, {"gelu", "swiglu"}, "MLP kind"));
    t.push_back(text("position", S::Model, &O::position, {"learned", "rope", "cope"}, "position encoding"));
    t.push_back(number("cope-max-pos", S::Model, &O::cope_max_pos, 1, 1 << 20,
                       "positions per head CoPE tells apart (with --position cope)"));
    t.push_back(number("window", S::Model, &O::window, 0, 1 << 20,
                       "sliding window w: position i attends to i-w .. i (0: every earlier position)"));
    t.push_back(number("batch", S::Optimizer, &O::batch, 1, 1 << 20, "sequences per step"));
    t.push_back(number("steps", S::Optimizer, &O::steps, 1, kBig, "optimizer steps (the schedule's length)"));
    t.push_back(number("lr", S::Optimizer, &O::lr, 1e-12, 10, "peak learning rate"));
    t.push_back(number("min-lr", S::Optimizer, &O::min_lr, 0, 10,
                     "learning rate at the end of the cosine decay (auto: lr/10)", true));
    t.push_back(number("warmup", S::Optimizer, &O::warmup, 0, kBig, "linear warm-up steps"));
    t.push_back(number("weight-decay", S::Optimizer, &O::weight_decay, 0, 10, "AdamW decoupled weight decay"));
    t.push_back(number("clip", S::Optimizer, &O::clip, 0, 1e9, "global gradient-norm bound (0: none)"));
    t.push_back(OptionSpec{"seed", S::Optimizer, &O::seed});  // any uint64_t
    t.back().help = "seed of the weights, dropout, batches and the generated task";
    t.push_back(text("data", S::Data, &O::data, {}, "UTF-8 text file (default: the generated recall/copy task)"));
    t.back().allows_empty = true;
    t.push_back(toggle("bytes", S::Data, &O::bytes, "byte vocabulary (256) instead of the text's characters"));
    t.push_back(number("threads", S::Run, &O::threads, 0, 4096, "CPU threads (0: all cores)"));
    t.push_back(text("device", S::Run, &O::device, {"cpu", "cuda"}, "where training runs: cpu or cuda (GPU 0)"));
    t.push_back(text("matmul-precision", S::Run, &O::matmul_precision, {"fp32", "tf32", "bf16"},
                     "fp32, or tf32 / bf16 tensor cores for a CUDA device's matrix products"));
    t.push_back(number("eval-every", S::Run, &O::eval_every, 1, kBig, "steps between validations (auto: steps/10)",
                        true));
    t.push_back(number("eval-batches", S::Run, &O::eval_batches, 1, 1e6, "validation batches (fixed windows)"));
    t.push_back(number("log-every", S::Run, &O::log_every, 1, kBig,
                        "steps between log lines and metrics.jsonl entries (auto: steps/10)", true));
    t.push_back(number("save-every", S::Run, &O::save_every, 0, kBig, "steps between checkpoints (0: at the end)"));
    t.push_back(number("stop-at", S::Invocation, &O::stop_at, 0, kBig,
                        "end this invocation after that step (0: --steps); continue later with --resume"));
    t.back().for_compare = false;
    t.push_back(text("out", S::Invocation, &O::out, {}, "output directory"));
    t.push_back(toggle("resume", S::Invocation, &O::resume, "continue the checkpoint in --out exactly", false));
    t.push_back(toggle("overwrite", S::Invocation, &O::overwrite, "replace a checkpoint already in --out", false));
    return t;
  }();
  return table;
}

const OptionSpec *find_spec(const std::string &name) {
  for (const OptionSpec &s : option_table())
    if (name == s.name) return &s;
  return nullptr;
}

// The paper's run (MoAS, nanoGPT shakespeare-char): applied before --config and flags, which may override it.
const std::vector<std::pair<std::string, std::string>> &paper_preset() {
  static const std::vector<std::pair<std::string, std::string>> preset = {
      {"layers", "6"},      {"heads", "6"},          {"width", "384"},   {"block", "256"},
      {"batch", "12"},      {"dropout", "0.2"},      {"lr", "1e-3"},     {"min-lr", "1e-4"},
      {"warmup", "100"},    {"steps", "2000"},       {"weight-decay", "0.1"}, {"clip", "1"},
      {"eval-every", "250"}, {"eval-batches", "200"}, {"position", "learned"}, {"norm", "layernorm"},
      {"mlp", "gelu"}};
  return preset;
}

std::string shortest_text(double value) {
  char buffer[64];
  for (int precision = 6; precision <= 17; precision++) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

std::string flag(const OptionSpec &spec) { return std::string("--") + spec.name; }

std::string range_text(const OptionSpec &spec) {
  return shortest_text(spec.low) + " to " + shortest_text(spec.high);
}

long long parse_integer(const OptionSpec &spec, const std::string &value) {
  if (spec.allows_auto && value == "auto") return kAuto;
  errno = 0;
  char *end = nullptr;
  const long long parsed = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno == ERANGE)
    throw UsageError(flag(spec) + ": '" + value + "' is not a whole number" +
                     (spec.allows_auto ? " (or auto)" : ""));
  if ((double)parsed < spec.low || (double)parsed > spec.high)
    throw UsageError(flag(spec) + " " + value + " is out of range: use " + range_text(spec) +
                     (spec.allows_auto ? " or auto" : ""));
  return parsed;
}

void validate_branches(const std::string &value) {
  std::stringstream list(value);
  std::string item;
  int count = 0;
  while (std::getline(list, item, ',')) {
    char *end = nullptr;
    errno = 0;
    const long kv = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno == ERANGE || kv < 0 || kv > 4096)
      throw UsageError("--branches '" + value + "': give kv heads per branch as whole numbers, e.g. 6,2,1");
    count++;
  }
  if (count < 1 || count > MOAS_MAX_BRANCHES || value.back() == ',')
    throw UsageError("--branches '" + value + "': MoAS takes 1 to " + std::to_string(MOAS_MAX_BRANCHES) +
                     " branches, e.g. 6,2,1");
}

void set_value(TrainOptions &options, const OptionSpec &spec, const std::string &value) {
  struct Setter {
    TrainOptions &options;
    const OptionSpec &spec;
    const std::string &value;
    void operator()(int TrainOptions::*field) const { options.*field = (int)parse_integer(spec, value); }
    void operator()(double TrainOptions::*field) const {
      if (spec.allows_auto && value == "auto") {
        options.*field = kAuto;
        return;
      }
      errno = 0;
      char *end = nullptr;
      const double parsed = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(parsed))
        throw UsageError(flag(spec) + ": '" + value + "' is not a number" + (spec.allows_auto ? " (or auto)" : ""));
      if (parsed < spec.low || parsed > spec.high)
        throw UsageError(flag(spec) + " " + value + " is out of range: use " + range_text(spec));
      options.*field = parsed;
    }
    void operator()(uint64_t TrainOptions::*field) const {
      errno = 0;
      char *end = nullptr;
      const unsigned long long parsed = std::strtoull(value.c_str(), &end, 10);
      if (value.empty() || value[0] == '-' || *end != '\0' || errno == ERANGE)
        throw UsageError(flag(spec) + ": '" + value + "' is not a whole number from 0 to 2^64-1");
      options.*field = parsed;
    }
    void operator()(std::string TrainOptions::*field) const {
      if (!spec.choices.empty()) {
        bool known = false;
        std::string list;
        for (const std::string &c : spec.choices) {
          known = known || c == value;
          list += (list.empty() ? "" : "|") + c;
        }
        if (!known) throw UsageError(flag(spec) + ": '" + value + "' is not one of " + list);
      }
      if (value.empty() && !spec.allows_empty) throw UsageError(flag(spec) + " needs a non-empty value");
      if (std::string(spec.name) == "branches") validate_branches(value);
      options.*field = value;
    }
    void operator()(bool TrainOptions::*field) const {
      if (value != "true" && value != "false") throw UsageError(flag(spec) + ": '" + value + "' is not true or false");
      options.*field = value == "true";
    }
  };
  std::visit(Setter{options, spec, value}, spec.field);
}

std::string get_value(const TrainOptions &options, const OptionSpec &spec) {
  struct Getter {
    const TrainOptions &options;
    const OptionSpec &spec;
    std::string operator()(int TrainOptions::*field) const {
      const int v = options.*field;
      return spec.allows_auto && v == kAuto ? "auto" : std::to_string(v);
    }
    std::string operator()(double TrainOptions::*field) const {
      const double v = options.*field;
      return spec.allows_auto && v == kAuto ? "auto" : shortest_text(v);
    }
    std::string operator()(uint64_t TrainOptions::*field) const { return std::to_string(options.*field); }
    std::string operator()(std::string TrainOptions::*field) const { return options.*field; }
    std::string operator()(bool TrainOptions::*field) const { return options.*field ? "true" : "false"; }
  };
  return std::visit(Getter{options, spec}, spec.field);
}

// A --config file value as the text a flag would carry.
std::string json_value_text(const std::string &file, const std::string &key, const nlohmann::json &value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_boolean()) return value.get<bool>() ? "true" : "false";
  if (value.is_number_integer() || value.is_number_unsigned()) return value.dump();
  if (value.is_number_float()) return shortest_text(value.get<double>());
  if (value.is_array() && !value.empty()) {
    std::string joined;
    for (const nlohmann::json &item : value) {
      if (!item.is_number_integer()) throw UsageError("config " + file + ": \"" + key + "\" lists non-integers");
      joined += (joined.empty() ? "" : ",") + item.dump();
    }
    return joined;
  }
  throw UsageError("config " + file + ": \"" + key + "\" must be a number, a string, true/false or a list of numbers");
}

std::vector<std::pair<std::string, std::string>> read_config_file(const std::string &path, bool for_compare) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw RuntimeFailure("cannot read --config " + path + ": give a readable JSON file");
  nlohmann::json document;
  try {
    document = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception &e) {
    throw UsageError("--config " + path + " is not valid JSON (" + e.what() + ")");
  }
  if (!document.is_object()) throw UsageError("--config " + path + " must hold one JSON object of flag: value");
  std::vector<std::pair<std::string, std::string>> assignments;
  for (auto it = document.begin(); it != document.end(); ++it) {
    if (it.key() == "paper") {
      if (!it->is_boolean()) throw UsageError("config " + path + ": \"paper\" must be true or false");
      if (it->get<bool>()) assignments.insert(assignments.begin(), paper_preset().begin(), paper_preset().end());
      continue;
    }
    const OptionSpec *spec = find_spec(it.key());
    if (!spec) throw UsageError("config " + path + ": unknown key \"" + it.key() + "\" (keys are the flag names)");
    if (for_compare && !spec->for_compare)
      throw UsageError("config " + path + ": \"" + it.key() + "\" does not apply to moas compare");
    assignments.emplace_back(it.key(), json_value_text(path, it.key(), *it));
  }
  return assignments;
}

// The double a person would write for a library float default: 0.01, not 0.009999999776482582.
double decimal_of(float value) {
  char buffer[32];
  for (int precision = 1; precision <= 9; precision++) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, (double)value);
    if ((float)std::strtod(buffer, nullptr) == value) break;
  }
  return std::strtod(buffer, nullptr);
}

int cores_available() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  return (int)std::max(1u, std::thread::hardware_concurrency());
}

const char *const kModeNames[] = {"static", "soft", "top1"};
const char *const kNormNames[] = {"layernorm", "rmsnorm"};
const char *const kMlpNames[] = {"gelu", "swiglu"};
const char *const kPositionNames[] = {"learned", "rope", "cope"};
const char *const kDeviceNames[] = {"cpu", "cuda"};
const char *const kPrecisionNames[] = {"fp32", "tf32", "bf16"};

int index_of(const char *const *names, int count, const std::string &name) {
  for (int i = 0; i < count; i++)
    if (name == names[i]) return i;
  throw UsageError("unknown setting '" + name + "'");
}

}  // namespace

TrainOptions default_train_options(const std::string &default_out) {
  moas_model_config model;
  model.struct_size = sizeof model;
  check_status(moas_model_config_default(&model), "moas_model_config_default");
  moas_adamw_config adamw;
  adamw.struct_size = sizeof adamw;
  check_status(moas_adamw_config_default(&adamw), "moas_adamw_config_default");

  TrainOptions o;
  o.moas_mode = kModeNames[model.moas_mode];
  o.branches.clear();
  for (int k = 0; k < model.moas_n_branches; k++)
    o.branches += (k ? "," : "") + std::to_string(model.moas_branch_kv_heads[k]);
  o.aux_weight = decimal_of(model.moas_aux_weight);
  o.lb_weight = decimal_of(model.head_selection.load_balance_weight);
  o.norm = kNormNames[model.norm];
  o.mlp = kMlpNames[model.mlp];
  // Rotary positions: the small default model learns the generated task's lookups within its budget with them,
  // and hardly at all with learned positions (--paper keeps the reference's learned positions).
  o.position = "rope";
  o.cope_max_pos = model.cope_max_pos;
  o.window = model.window_size;
  o.seed = model.seed;
  o.weight_decay = decimal_of(adamw.weight_decay);
  o.clip = decimal_of(adamw.grad_clip);
  o.out = default_out;
  return o;
}

ParsedOptions parse_train_arguments(int argc, char **argv, int first, bool for_compare) {
  const char *command = for_compare ? "moas compare" : "moas train";
  ParsedOptions parsed;
  std::vector<std::pair<std::string, std::string>> from_config, from_flags;
  bool paper = false;
  for (int i = first; i < argc; i++) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      parsed.help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0 || arg.size() == 2)
      throw UsageError("unexpected argument '" + arg + "' for " + command + " (flags start with --; see " + command +
                       " --help)");
    const size_t equals = arg.find('=');
    const std::string name = arg.substr(2, equals == std::string::npos ? std::string::npos : equals - 2);
    const bool inline_value = equals != std::string::npos;
    if (name == "paper") {
      if (inline_value) throw UsageError("--paper takes no value");
      paper = true;
      continue;
    }
    const OptionSpec *spec = name == "config" ? nullptr : find_spec(name);
    if (name != "config" && !spec)
      throw UsageError("unknown flag --" + name + " for " + command + " (see " + command + " --help)");
    if (spec && for_compare && !spec->for_compare)
      throw UsageError("--" + name + " does not apply to moas compare: it trains every attention variant itself");
    std::string value;
    if (spec && std::holds_alternative<bool TrainOptions::*>(spec->field) && !inline_value) {
      value = "true";
    } else if (inline_value) {
      value = arg.substr(equals + 1);
    } else {
      if (i + 1 >= argc || std::string(argv[i + 1]).rfind("--", 0) == 0)
        throw UsageError("--" + name + " needs a value");
      value = argv[++i];
    }
    if (name == "config") {
      auto read = read_config_file(value, for_compare);
      from_config.insert(from_config.end(), read.begin(), read.end());
    } else {
      from_flags.emplace_back(name, value);
    }
  }
  if (paper) parsed.assignments = paper_preset();
  parsed.assignments.insert(parsed.assignments.end(), from_config.begin(), from_config.end());
  parsed.assignments.insert(parsed.assignments.end(), from_flags.begin(), from_flags.end());
  return parsed;
}

void apply_settings(TrainOptions &options, const std::vector<std::pair<std::string, std::string>> &assignments) {
  for (const auto &[name, value] : assignments) {
    const OptionSpec *spec = find_spec(name);
    if (!spec) throw UsageError("unknown setting --" + name);
    set_value(options, *spec, value);
  }
  if (resolved_min_lr(options) > options.lr)
    throw UsageError("--min-lr " + shortest_text(options.min_lr) + " is above --lr " + shortest_text(options.lr) +
                     ": the cosine decays down to --min-lr");
}

OptionValues option_values(const TrainOptions &options) {
  OptionValues values;
  for (const OptionSpec &spec : option_table())
    if (spec.scope != OptionScope::Invocation) values[spec.name] = get_value(options, spec);
  return values;
}

TrainOptions resumed_options(const OptionValues &stored, const TrainOptions &defaults,
                             const std::vector<std::pair<std::string, std::string>> &assignments) {
  TrainOptions options = defaults;
  std::vector<std::pair<std::string, std::string>> stored_assignments;
  for (const auto &[name, value] : stored) {
    const OptionSpec *spec = find_spec(name);
    if (!spec || spec->scope == OptionScope::Invocation)
      throw RuntimeFailure("the checkpoint records an unknown setting '" + name +
                           "': it was written by another version of moas");
    stored_assignments.emplace_back(name, value);
  }
  apply_settings(options, stored_assignments);
  for (const auto &[name, value] : assignments) {
    const OptionSpec *spec = find_spec(name);
    TrainOptions probe = options;
    apply_settings(probe, std::vector<std::pair<std::string, std::string>>{{name, value}});
    const std::string requested = get_value(probe, *spec), recorded = get_value(options, *spec);
    const bool fixed = spec->scope != OptionScope::Run && spec->scope != OptionScope::Invocation && name != "steps";
    if (fixed && requested != recorded)
      throw UsageError("--" + name + " " + requested + " differs from the checkpoint's " + recorded +
                       ": a resumed run keeps its model, data and optimizer settings (drop the flag or use another "
                       "--out)");
    options = probe;
  }
  return options;
}

int resolved_eval_every(const TrainOptions &options) {
  return options.eval_every != kAuto ? options.eval_every : std::max(1, options.steps / 10);
}

double resolved_min_lr(const TrainOptions &options) {
  return options.min_lr != kAuto ? options.min_lr : options.lr / 10;
}

int resolved_log_every(const TrainOptions &options) {
  return options.log_every != kAuto ? options.log_every : std::max(1, options.steps / 10);
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
  c.device = index_of(kDeviceNames, 2, o.device);
  c.matmul_precision = index_of(kPrecisionNames, 3, o.matmul_precision);
  c.norm = index_of(kNormNames, 2, o.norm);
  c.mlp = index_of(kMlpNames, 2, o.mlp);
  c.position = index_of(kPositionNames, 3, o.position);
  c.cope_max_pos = o.cope_max_pos;
  c.window_size = o.window;
  if (o.attention == "moas") {
    c.attention = MOAS_ATTENTION_MOAS;
    c.n_kv_head = o.heads;  // branches carry their own kv heads
    c.moas_mode = index_of(kModeNames, 3, o.moas_mode);
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

moas_adamw_config make_adamw_config(const TrainOptions &o) {
  moas_adamw_config a;
  a.struct_size = sizeof a;
  check_status(moas_adamw_config_default(&a), "moas_adamw_config_default");
  a.lr = (float)o.lr;
  a.weight_decay = (float)o.weight_decay;
  a.grad_clip = (float)o.clip;
  return a;
}

int effective_threads(int requested) { return requested > 0 ? requested : cores_available(); }

std::string describe_device(const TrainOptions &o) {
  if (o.device == "cuda") return "CUDA device 0, " + o.matmul_precision + " products";
  return std::to_string(effective_threads(o.threads)) + " CPU threads";
}

std::string train_help(bool for_compare) {
  const TrainOptions defaults = default_train_options(for_compare ? "runs/compare" : "runs/train");
  std::ostringstream help;
  if (for_compare)
    help << "usage: moas compare [flags]\n\nTrains MHA, GQA, MQA, static/soft/top-1 MoAS and MoH on the same data, "
            "seed and budget into DIR/<variant>/\n(replacing earlier runs there), then prints a table and writes "
            "DIR/compare.svg and DIR/compare.json.\n\n";
  else
    help << "usage: moas train [flags]\n\nTrains a model and writes DIR/model.safetensors, DIR/model.optim.safetensors "
            "and DIR/metrics.jsonl.\n\n";
  help << "  --config FILE           JSON object of flag: value (flags given here win)\n"
          "  --paper                 the paper's run: 6 layers, 6 heads, 384 wide, T=256, B=12, dropout 0.2, lr 1e-3\n"
          "                          (betas 0.9/0.99, wd 0.1, clip 1), warm-up 100, cosine to 1e-4 over 2000 steps\n";
  for (const OptionSpec &spec : option_table()) {
    if (for_compare && !spec.for_compare) continue;
    const bool is_switch = std::holds_alternative<bool TrainOptions::*>(spec.field);
    std::string left = flag(spec) + (is_switch ? "" : " VALUE");
    left.resize(std::max<size_t>(24, left.size() + 1), ' ');
    help << "  " << left << spec.help;
    const std::string value = get_value(defaults, spec);
    if (!is_switch && !value.empty()) help << " [" << value << "]";
    help << "\n";
  }
  return help.str();
}

}  // namespace moas_cli
