// What `moas compare` accepts of the training flags: all but those that pick one attention variant (it trains every
// variant itself) and those that continue or stop a single run; and its own flags, which train does not take.
#include <cstring>

#include "flag_spec.hpp"

namespace moas_cli {

const std::vector<std::string> &compare_variant_names() {
  static const std::vector<std::string> names = {"mha",       "gqa",       "mqa", "moas-static",
                                                 "moas-soft", "moas-top1", "moh", "moh-all"};
  return names;
}

void add_compare_flags(std::vector<OptionSpec> &t) {
  using O = TrainOptions;
  t.push_back(number("seeds", OptionScope::Invocation, &O::seeds, 1, 100,
                     "seeds per variant (--seed, --seed + 1, ...): the table gives mean +- std"));
  t.push_back(text("variants", OptionScope::Invocation, &O::variants, {},
                   "comma-separated subset of mha,gqa,mqa,moas-static,moas-soft,moas-top1,moh,moh-all\n"
                   "                          (moh: MoH mixture; moh-all: MoH AllHeads) (default: all but moh-all)"));
}

bool compare_only(const OptionSpec &spec) {
  return std::strcmp(spec.name, "seeds") == 0 || std::strcmp(spec.name, "variants") == 0;
}

bool compare_takes(const OptionSpec &spec) {
  static const char *const kChosenByCompare[] = {"attention", "moas-mode", "heads-strategy",
                                                 "stop-at",   "resume",    "overwrite"};
  for (const char *name : kChosenByCompare)
    if (std::strcmp(spec.name, name) == 0) return false;
  return true;
}

const char *compare_usage() {
  return "usage: moas compare [flags]\n\nTrains MHA, GQA, MQA, static/soft/top-1 MoAS and MoH (or the --variants "
         "given) on the same data,\nseeds and budget into DIR/<variant>/ (DIR/<variant>/seed-S/ with --seeds above 1, "
         "replacing earlier\nruns there), then prints a table and writes DIR/compare.svg and DIR/compare.json.\n\n";
}

}  // namespace moas_cli
