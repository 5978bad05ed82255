// What `moas compare` accepts of the training flags: all but those that pick one attention variant (it trains every
// variant itself) and those that continue or stop a single run.
#include <cstring>

#include "flag_spec.hpp"

namespace moas_cli {

bool compare_takes(const OptionSpec &spec) {
  static const char *const kChosenByCompare[] = {"attention", "moas-mode", "heads-strategy",
                                                 "stop-at",   "resume",    "overwrite"};
  for (const char *name : kChosenByCompare)
    if (std::strcmp(spec.name, name) == 0) return false;
  return true;
}

const char *compare_usage() {
  return "usage: moas compare [flags]\n\nTrains MHA, GQA, MQA, static/soft/top-1 MoAS and MoH on the same data, "
         "seed and budget into DIR/<variant>/\n(replacing earlier runs there), then prints a table and writes "
         "DIR/compare.svg and DIR/compare.json.\n\n";
}

}  // namespace moas_cli
