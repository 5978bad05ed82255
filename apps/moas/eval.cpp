#include "eval.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "dataset.hpp"
#include "errors.hpp"
#include "flag_spec.hpp"
#include "generate.hpp"
#include "generate_flags.hpp"

namespace moas_cli {

namespace {

// Windows per forward: enough rows to keep the matrix products busy, few enough for any model to fit.
constexpr int kWindowsPerBatch = 8;

struct EvalOptions {
  std::string checkpoint;
  std::string data;
  int batches = 8;
  int block = 0;  // 0: the checkpoint's block
  int threads = 0;
  bool cuda = false;
};

const char kUsage[] =
    "usage: moas eval --checkpoint DIR --data FILE [flags]\n\n"
    "The mean cross-entropy of a checkpoint written by moas train on a UTF-8 text file, encoded with the\n"
    "checkpoint's vocabulary, over batches of 8 windows spread evenly over the text (the same windows every time);\n"
    "prints the loss (nats per token), its perplexity and bits per token.\n\n"
    "  -m, --checkpoint PATH the run directory (its latest weights), or a weights file such as DIR/model.safetensors\n"
    "  --data FILE           the text to score; every character must be in the checkpoint's vocabulary\n"
    "  --batches N           batches of 8 windows [8]\n"
    "  --block T             tokens each window predicts, at most the model's block [the model's block]\n"
    "  --threads N           CPU threads (0: all cores) [0]\n";

std::string usage() {
  std::string device = "--device " + choice_list(kDeviceNames);
  device.resize(std::max<size_t>(22, device.size() + 1), ' ');
  return kUsage + ("  " + device + "where the model runs (cuda: GPU 0) [cpu]\n");
}

// Reads argv[2..argc); throws UsageError. Returns false when --help was asked for.
bool parse_eval_arguments(int argc, char **argv, EvalOptions *o) {
  for (int i = 2; i < argc; i++) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") return false;
    const size_t equals = arg == "-m" ? std::string::npos : arg.find('=');
    const std::string flag = arg == "-m" ? "--checkpoint" : arg.substr(0, equals);
    if (flag != "--checkpoint" && flag != "--data" && flag != "--batches" && flag != "--block" &&
        flag != "--threads" && flag != "--device")
      throw UsageError("unknown " + std::string(arg.rfind("-", 0) == 0 ? "flag " : "argument ") + flag +
                       " for moas eval (see moas eval --help)");
    std::string value;
    if (equals != std::string::npos) value = arg.substr(equals + 1);
    else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) value = argv[++i];
    else throw UsageError(arg + " needs a value");
    if (flag == "--checkpoint") o->checkpoint = value;
    else if (flag == "--data") o->data = value;
    else if (flag == "--batches") o->batches = parse_count(flag, value, 1, 1000000);
    else if (flag == "--block") o->block = parse_count(flag, value, 1, 1 << 24);
    else if (flag == "--threads") o->threads = parse_count(flag, value, 0, 4096);
    else {
      if (std::find(kDeviceNames.begin(), kDeviceNames.end(), value) == kDeviceNames.end())
        throw UsageError("--device: '" + value + "' is not one of " + choice_list(kDeviceNames));
      o->cuda = value == "cuda";
    }
  }
  if (o->checkpoint.empty())
    throw UsageError("moas eval needs --checkpoint DIR (e.g. runs/train, the --out of moas train)");
  if (o->data.empty()) throw UsageError("moas eval needs --data FILE, the text to score");
  return true;
}

}  // namespace

int run_eval_command(int argc, char **argv) {
  EvalOptions o;
  if (!parse_eval_arguments(argc, argv, &o)) {
    std::fputs(usage().c_str(), stdout);
    return 0;
  }
  const std::string text = read_text_file("--data", o.data);
  const OpenedCheckpoint checkpoint = open_checkpoint(o.checkpoint, o.threads, o.cuda);
  const int block = o.block > 0 ? o.block : checkpoint.config.block_size;
  if (block > checkpoint.config.block_size)
    throw UsageError("--block " + std::to_string(block) + " is longer than the model's block of " +
                     std::to_string(checkpoint.config.block_size) + " positions");
  std::vector<int32_t> tokens;
  try {
    tokens = checkpoint.vocabulary.encode(text);
  } catch (const UsageError &e) {
    // The text, not the command line, is what to fix.
    throw RuntimeFailure("--data " + o.data + ": " + e.what());
  }
  if (tokens.size() < (size_t)block + 1)
    throw RuntimeFailure("--data " + o.data + " has " + std::to_string(tokens.size()) + " tokens: a window needs " +
                         std::to_string(block + 1) + " (lower --block)");

  // Window w of W starts at w * (n - block - 1) / (W - 1): the first at the text's start, the last at its end.
  const uint64_t windows = (uint64_t)o.batches * kWindowsPerBatch, last_start = tokens.size() - block - 1;
  std::vector<int32_t> inputs((size_t)kWindowsPerBatch * block), targets(inputs.size());
  double total = 0;
  for (int b = 0; b < o.batches; b++) {
    for (int row = 0; row < kWindowsPerBatch; row++) {
      const uint64_t w = (uint64_t)b * kWindowsPerBatch + row;
      const size_t start = windows > 1 ? (size_t)(last_start * w / (windows - 1)) : 0;
      std::copy_n(tokens.begin() + (ptrdiff_t)start, block, inputs.begin() + (ptrdiff_t)row * block);
      std::copy_n(tokens.begin() + (ptrdiff_t)start + 1, block, targets.begin() + (ptrdiff_t)row * block);
    }
    float loss = 0;
    check_status(moas_forward(checkpoint.model.get(), inputs.data(), targets.data(), kWindowsPerBatch, block,
                              /*training=*/0, &loss, nullptr),
                 "moas_forward");
    total += loss;
  }
  // Every batch scores the same number of tokens, so the mean of the batch means is the mean over all of them.
  const double loss = total / o.batches;
  std::printf("eval: %s, %zu tokens; %llu windows of %d tokens; %s\n", o.data.c_str(), tokens.size(),
              (unsigned long long)windows, block, checkpoint.path.c_str());
  std::printf("loss %.4f  perplexity %.4f  bits per token %.4f\n", loss, std::exp(loss), loss / std::log(2.0));
  return 0;
}

}  // namespace moas_cli
