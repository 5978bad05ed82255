// The flags of `moas generate`.
#pragma once

#include <cstdint>
#include <string>

namespace moas_cli {

struct GenerateOptions {
  std::string checkpoint;
  std::string prompt;
  int tokens = 200;
  double temperature = 0.8;
  int top_k = 0;
  uint64_t seed = 1337;
  int threads = 0;
  bool cuda = false;
};

// The --help text, its --device words taken from the list the parser checks.
std::string generate_usage();

// Reads argv[2..argc); throws UsageError. Returns false when --help was asked for.
bool parse_generate_arguments(int argc, char **argv, GenerateOptions *o);

}  // namespace moas_cli
