// `moas compare`: MHA, GQA, MQA, static/soft/top-1 MoAS and MoH trained on the same data, seed and budget.
#pragma once

namespace moas_cli {

// Trains each variant into DIR/<variant>/, then prints a markdown table and writes DIR/compare.json and
// DIR/compare.svg. Returns the exit code.
int run_compare_command(int argc, char **argv);

}  // namespace moas_cli
