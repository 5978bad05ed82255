// Parsing, --config files, resuming and --help, over the flags that model_flags.cpp and train_flags.cpp list.
#include "options.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <variant>

#include "decimal.hpp"
#include "errors.hpp"
#include "flag_spec.hpp"

namespace moas_cli {

namespace {

const std::vector<OptionSpec> &option_table() {
  static const std::vector<OptionSpec> table = [] {
    std::vector<OptionSpec> t;
    add_model_flags(t);
    add_train_flags(t);
    add_compare_flags(t);
    return t;
  }();
  return table;
}

const OptionSpec *find_spec(const std::string &name) {
  for (const OptionSpec &s : option_table())
    if (name == s.name) return &s;
  return nullptr;
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
  const std::optional<long long> parsed = parse_decimal<long long>(value);
  if (!parsed)
    throw UsageError(flag(spec) + ": '" + value + "' is not a whole number" +
                     (spec.allows_auto ? " (or auto)" : ""));
  if ((double)*parsed < spec.low || (double)*parsed > spec.high)
    throw UsageError(flag(spec) + " " + value + " is out of range: use " + range_text(spec) +
                     (spec.allows_auto ? " or auto" : ""));
  return *parsed;
}

void validate_branches(const std::string &value) {
  std::stringstream list(value);
  std::string item;
  int count = 0;
  while (std::getline(list, item, ',')) {
    const std::optional<int> kv = parse_decimal<int>(item);
    if (!kv || *kv < 0 || *kv > 4096)
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
      const std::optional<double> parsed = parse_decimal<double>(value);
      if (!parsed)
        throw UsageError(flag(spec) + ": '" + value + "' is not a number" + (spec.allows_auto ? " (or auto)" : ""));
      if (*parsed < spec.low || *parsed > spec.high)
        throw UsageError(flag(spec) + " " + value + " is out of range: use " + range_text(spec));
      options.*field = *parsed;
    }
    void operator()(uint64_t TrainOptions::*field) const {
      const std::optional<uint64_t> parsed = parse_decimal<uint64_t>(value);
      if (!parsed) throw UsageError(flag(spec) + ": '" + value + "' is not a whole number from 0 to 2^64-1");
      options.*field = *parsed;
    }
    void operator()(std::string TrainOptions::*field) const {
      if (!spec.choices.empty() && std::find(spec.choices.begin(), spec.choices.end(), value) == spec.choices.end())
        throw UsageError(flag(spec) + ": '" + value + "' is not one of " + choice_list(spec.choices));
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

std::string read_config_text(const std::string &path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw RuntimeFailure("--config " + path + " is a directory: give a JSON file of flag: value");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (!in || !(text << in.rdbuf()) || in.bad())
    throw RuntimeFailure("cannot read --config " + path + ": give a readable JSON file");
  return text.str();
}

// JSON allows a key twice in an object and nlohmann keeps the last silently; in a config file that is a mistake
// (two values for one flag, one of them ignored), so the parser's callback refuses it.
nlohmann::json parse_config(const std::string &path, const std::string &text) {
  std::vector<std::set<std::string>> keys_of_open_objects;
  auto refuse_duplicates = [&](int, nlohmann::json::parse_event_t event, nlohmann::json &parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (event == Event::object_start) keys_of_open_objects.emplace_back();
    if (event == Event::object_end) keys_of_open_objects.pop_back();
    if (event == Event::key && !keys_of_open_objects.back().insert(parsed.get<std::string>()).second)
      throw UsageError("--config " + path + " gives \"" + parsed.get<std::string>() + "\" twice: keep one");
    return true;
  };
  try {
    return nlohmann::json::parse(text, refuse_duplicates);
  } catch (const nlohmann::json::exception &e) {
    throw UsageError("--config " + path + " is not valid JSON (" + e.what() + ")");
  }
}

std::vector<std::pair<std::string, std::string>> read_config_file(const std::string &path, bool for_compare) {
  const nlohmann::json document = parse_config(path, read_config_text(path));
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
    if (for_compare && !compare_takes(*spec))
      throw UsageError("config " + path + ": \"" + it.key() + "\" does not apply to moas compare");
    if (!for_compare && compare_only(*spec))
      throw UsageError("config " + path + ": \"" + it.key() + "\" applies to moas compare only");
    assignments.emplace_back(it.key(), json_value_text(path, it.key(), *it));
  }
  return assignments;
}

}  // namespace

std::string choice_list(const std::vector<std::string> &choices) {
  std::string list;
  for (const std::string &choice : choices) list += (list.empty() ? "" : "|") + choice;
  return list;
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

TrainOptions default_train_options(const std::string &default_out) {
  TrainOptions o;
  set_model_defaults(o);
  set_optimizer_defaults(o);
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
    if (spec && for_compare && !compare_takes(*spec))
      throw UsageError("--" + name + " does not apply to moas compare: it trains every attention variant itself");
    if (spec && !for_compare && compare_only(*spec))
      throw UsageError("--" + name + " applies to moas compare only (moas train trains one model with one seed)");
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

std::string train_help(bool for_compare) {
  const TrainOptions defaults = default_train_options(for_compare ? "runs/compare" : "runs/train");
  std::ostringstream help;
  help << (for_compare ? compare_usage() : train_usage()) << progress_legend();
  help << "  --config FILE           JSON object of flag: value (flags given here win)\n"
          "  --paper                 the paper's run: 6 layers, 6 heads, 384 wide, T=256, B=12, dropout 0.2, lr 1e-3\n"
          "                          (betas 0.9/0.99, wd 0.1, clip 1), warm-up 100, cosine to 1e-4 over 2000 steps\n";
  for (const OptionSpec &spec : option_table()) {
    if (for_compare ? !compare_takes(spec) : compare_only(spec)) continue;
    const bool is_switch = std::holds_alternative<bool TrainOptions::*>(spec.field);
    const std::string value_name = spec.choices.empty() ? "VALUE" : choice_list(spec.choices);
    std::string left = flag(spec) + (is_switch ? "" : " " + value_name);
    // A flag too long for the column puts its help on the next line, where the others' help starts.
    left = left.size() < 24 ? left + std::string(24 - left.size(), ' ') : left + "\n" + std::string(26, ' ');
    help << "  " << left << spec.help;
    const std::string value = get_value(defaults, spec);
    if (!is_switch && !value.empty()) help << " [" << value << "]";
    help << "\n";
  }
  return help.str();
}

}  // namespace moas_cli
