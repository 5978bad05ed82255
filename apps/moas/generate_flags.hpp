// The flags of `moas generate`.
#pragma once

#include <string>

#include "generate.hpp"

namespace moas_cli {

struct GenerateOptions {
  std::string checkpoint;
  std::string prompt;
  std::string prompt_file;  // the prompt read from a file instead
  int tokens = 200;
  int num_samples = 1;  // seeds seed, seed + 1, ...
  SamplingSettings sampling;
  int threads = 0;
  bool cuda = false;
};

// A plain decimal in [low, high] for flag (UsageError otherwise), as generate's and eval's flags are parsed.
double parse_number(const std::string &flag, const std::string &value, double low, double high);
int parse_count(const std::string &flag, const std::string &value, int low, int high);

// The --help text, its --device words taken from the list the parser checks.
std::string generate_usage();

// Reads argv[2..argc); throws UsageError. Returns false when --help was asked for.
bool parse_generate_arguments(int argc, char **argv, GenerateOptions *o);

}  // namespace moas_cli
