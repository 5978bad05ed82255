// The flags of `moas generate`: parsed by hand, as they share only --device's words with training's settings table.
#include "generate_flags.hpp"

#include <algorithm>
#include <optional>

#include "decimal.hpp"
#include "errors.hpp"
#include "flag_spec.hpp"

namespace moas_cli {

namespace {

const char kUsageHead[] =
    "usage: moas generate --checkpoint DIR [flags]\n\n"
    "Samples text from a checkpoint written by moas train, decoding with a KV cache.\n\n"
    "  -m, --checkpoint PATH the run directory (its latest weights), or a weights file such as DIR/model.safetensors\n"
    "  -p, --prompt TEXT     text to continue, in the checkpoint's vocabulary [a newline]\n"
    "  --prompt-file FILE    the text to continue, read from FILE (instead of --prompt)\n"
    "  -n, --tokens N        tokens to generate per sample [200]\n"
    "  --num-samples K       K independent samples, seeds S, S+1, ..., each after a '=== sample' line [1]\n"
    "  --temperature T       softmax temperature; 0 picks the most likely token [0.8]\n"
    "  --top-k K             sample among the K most likely tokens; 0 for all [0]\n"
    "  --top-p P             then among the fewest most likely tokens whose probability reaches P, in (0, 1] [1]\n"
    "  --seed S              sampling seed [1337]\n"
    "  --threads N           CPU threads (0: all cores) [0]\n";

std::string range_text(long long low, long long high) {
  return " is out of range: use " + std::to_string(low) + " to " + std::to_string(high);
}

}  // namespace

double parse_number(const std::string &flag, const std::string &value, double low, double high) {
  const std::optional<double> parsed = parse_decimal<double>(value);
  if (!parsed) throw UsageError(flag + ": '" + value + "' is not a number");
  if (*parsed < low || *parsed > high)
    throw UsageError(flag + " " + value + range_text((long long)low, (long long)high));
  return *parsed;
}

int parse_count(const std::string &flag, const std::string &value, int low, int high) {
  const std::optional<long long> parsed = parse_decimal<long long>(value);
  if (!parsed) throw UsageError(flag + ": '" + value + "' is not a whole number");
  if (*parsed < low || *parsed > high) throw UsageError(flag + " " + value + range_text(low, high));
  return (int)*parsed;
}

std::string generate_usage() {
  std::string device = "--device " + choice_list(kDeviceNames);
  device.resize(std::max<size_t>(22, device.size() + 1), ' ');
  return kUsageHead + ("  " + device + "where the model decodes (cuda: GPU 0) [cpu]\n");
}

bool parse_generate_arguments(int argc, char **argv, GenerateOptions *o) {
  bool prompt_given = false;
  for (int i = 2; i < argc; i++) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") return false;
    // Short flags take their value as the next argument only; long ones also as --flag=VALUE.
    const std::string shorthand = arg == "-m"   ? "--checkpoint"
                                  : arg == "-p" ? "--prompt"
                                  : arg == "-n" ? "--tokens"
                                                : "";
    const size_t equals = shorthand.empty() ? arg.find('=') : std::string::npos;
    const std::string flag = shorthand.empty() ? arg.substr(0, equals) : shorthand;
    if (flag != "--checkpoint" && flag != "--prompt" && flag != "--prompt-file" && flag != "--tokens" &&
        flag != "--num-samples" && flag != "--temperature" && flag != "--top-k" && flag != "--top-p" &&
        flag != "--seed" && flag != "--threads" && flag != "--device")
      throw UsageError("unknown " + std::string(arg.rfind("-", 0) == 0 ? "flag " : "argument ") + flag +
                       " for moas generate (see moas generate --help)");
    std::string value;
    if (equals != std::string::npos) value = arg.substr(equals + 1);
    else if (i + 1 < argc && (flag == "--prompt" || std::string(argv[i + 1]).rfind("--", 0) != 0)) value = argv[++i];
    else throw UsageError(arg + " needs a value");
    if (flag == "--checkpoint") o->checkpoint = value;
    else if (flag == "--prompt") {
      o->prompt = value;
      prompt_given = true;
    }
    else if (flag == "--prompt-file") o->prompt_file = value;
    else if (flag == "--tokens") o->tokens = parse_count(flag, value, 1, 100000000);
    else if (flag == "--num-samples") o->num_samples = parse_count(flag, value, 1, 1000000);
    else if (flag == "--temperature") o->sampling.temperature = parse_number(flag, value, 0, 100);
    else if (flag == "--top-k") o->sampling.top_k = parse_count(flag, value, 0, 1 << 30);
    else if (flag == "--top-p") {
      o->sampling.top_p = parse_number(flag, value, 0, 1);
      if (o->sampling.top_p == 0) throw UsageError("--top-p 0 keeps no token: use a probability in (0, 1]");
    }
    else if (flag == "--threads") o->threads = parse_count(flag, value, 0, 4096);
    else if (flag == "--device") {
      if (std::find(kDeviceNames.begin(), kDeviceNames.end(), value) == kDeviceNames.end())
        throw UsageError("--device: '" + value + "' is not one of " + choice_list(kDeviceNames));
      o->cuda = value == "cuda";
    }
    else {
      const std::optional<uint64_t> seed = parse_decimal<uint64_t>(value);
      if (!seed) throw UsageError("--seed: '" + value + "' is not a whole number from 0 to 2^64-1");
      o->sampling.seed = *seed;
    }
  }
  if (prompt_given && !o->prompt_file.empty())
    throw UsageError("give either --prompt or --prompt-file, not both");
  if (o->checkpoint.empty())
    throw UsageError("moas generate needs --checkpoint DIR (e.g. runs/train, the --out of moas train)");
  return true;
}

}  // namespace moas_cli
