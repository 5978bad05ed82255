// How one flag of `moas train` / `moas compare` is described: its name (also its key in a --config file and in a
// checkpoint's metadata), the TrainOptions field it sets, its bounds or choices and its help line. The flags
// themselves are listed by concern: model_flags.cpp (shared by train and compare), train_flags.cpp (optimiser,
// data, the run), compare_flags.cpp (what compare decides itself); options.cpp parses, prints and resumes them.
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "options.hpp"

namespace moas_cli {

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

inline OptionSpec text(const char *name, OptionScope scope, std::string TrainOptions::*field,
                       std::vector<std::string> choices, const char *help) {
  OptionSpec s{name, scope, field};
  s.choices = std::move(choices);
  s.help = help;
  return s;
}

inline OptionSpec toggle(const char *name, OptionScope scope, bool TrainOptions::*field, const char *help) {
  OptionSpec s{name, scope, field};
  s.help = help;
  return s;
}

constexpr double kBig = 1e9;

// The words of the choice flags that become library enums, in the enums' order: make_model_config turns a word into
// its index. The flag table takes its choices from these same lists, so the parser, --help and the library agree.
extern const std::vector<std::string> kMoasModeNames, kNormNames, kMlpNames, kPositionNames, kDeviceNames,
    kPrecisionNames;

// "a|b|c": how --help and the parser's messages spell a flag's choices.
std::string choice_list(const std::vector<std::string> &choices);

// The double a person would write for a library float default: 0.01, not 0.009999999776482582.
double decimal_of(float value);

// The Model-scope flags, and the library's model defaults for them (model_flags.cpp).
void add_model_flags(std::vector<OptionSpec> &table);
void set_model_defaults(TrainOptions &options);

// The Optimizer, Data, Run and Invocation flags, the --paper preset, and the library's optimiser defaults
// (train_flags.cpp).
void add_train_flags(std::vector<OptionSpec> &table);
void set_optimizer_defaults(TrainOptions &options);
const std::vector<std::pair<std::string, std::string>> &paper_preset();
const char *train_usage();
// What the numbers of the progress and validation lines are, for train's and compare's --help.
const char *progress_legend();

// `moas compare` trains every attention variant itself: the flags that choose one are not its to take, and it has
// flags of its own that train does not take (compare_flags.cpp).
void add_compare_flags(std::vector<OptionSpec> &table);
bool compare_takes(const OptionSpec &spec);
bool compare_only(const OptionSpec &spec);
const char *compare_usage();
// The variants compare trains when --variants is not given, in its table's order.
const std::vector<std::string> &compare_variant_names();

}  // namespace moas_cli
