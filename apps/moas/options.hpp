// The settings of a training run, how flags and --config files set them, and how they become library configs.
//
// One table lists every setting once: its flag name (also its key in a --config JSON file and in a checkpoint's
// metadata), the field it sets, its bounds and its help line (flag_spec.hpp), assembled from the model's flags
// (model_flags.cpp) and the run's (train_flags.cpp). Parsing, --help, resuming and checkpoint metadata all read
// that table (options.cpp); compare_flags.cpp says which of it `moas compare` takes.
#pragma once

#include <moas.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace moas_cli {

// -1 in a number marked "auto" means: derive it (see resolve_* below); flags and files spell it "auto".
constexpr int kAuto = -1;

// Fields left empty or zero here are filled from the library's defaults by default_train_options.
struct TrainOptions {
  // Model.
  int layers = 2;
  int heads = 4;
  int kv_heads = kAuto;  // auto: heads (MHA)
  int width = 64;
  int block = 64;
  double dropout = 0.0;  // the generated task cannot be overfit in a few hundred steps
  std::string attention = "scheme";
  std::string moas_mode;  // library default
  std::string branches;   // kv heads per MoAS branch, e.g. "6,2,1"; library default
  double aux_weight = 0.0;
  std::string heads_strategy = "all";
  int shared_heads = kAuto;
  int active_heads = kAuto;
  double lb_weight = 0.0;
  std::string norm;
  std::string mlp;
  std::string position;
  int cope_max_pos = 0;  // library default
  int window = 0;        // library default
  // Optimisation.
  int batch = 16;
  int steps = 2500;  // enough for MHA to learn the generated task's recall (val loss ~1.4) where MQA stays ~2.6
  double lr = 3e-3;
  double min_lr = kAuto;  // auto: lr / 10
  int warmup = 50;
  double weight_decay = 0.0;
  double clip = 0.0;
  uint64_t seed = 0;
  // Data.
  std::string data;      // empty: the generated recall/copy task; a directory: token files (dataset.hpp)
  std::string val_data;  // empty: the last tenth of --data validates
  int vocab_size = kAuto;  // of a token directory; auto: its meta.json
  bool bytes = false;
  // The run itself: these may change when a run is resumed.
  int threads = 0;
  std::string device = "cpu";
  std::string matmul_precision = "fp32";
  int eval_every = kAuto;  // auto: steps / 10
  int eval_batches = 8;
  int log_every = kAuto;   // auto: steps / 10
  int save_every = kAuto;  // auto: every validation (eval-every); 0: only at the end
  int sample_every = 0;    // steps between printed samples; 0: none
  // This invocation only (never stored in a checkpoint).
  int stop_at = 0;         // end this invocation after that step; the schedule still spans --steps
  std::string out;
  bool resume = false;
  bool overwrite = false;
  // moas compare only (also never stored).
  int seeds = 1;         // each variant trains with --seed, --seed + 1, ...
  std::string variants;  // comma-separated; empty: all
};

// What may differ between a checkpoint's run and its resumption: Model, Optimizer (but --steps) and Data settings
// may not; Run settings may; Invocation settings are not stored at all.
enum class OptionScope { Model, Optimizer, Data, Run, Invocation };

// Every setting's canonical text, keyed by flag name (what checkpoints store and resumption compares).
using OptionValues = std::map<std::string, std::string>;

// The settings the user gave, in the order they take effect (--paper preset, then --config, then flags).
struct ParsedOptions {
  std::vector<std::pair<std::string, std::string>> assignments;
  bool help = false;
};

// Defaults: the library's (moas_model_config_default, moas_adamw_config_default) except the small model above.
TrainOptions default_train_options(const std::string &default_out);

// Reads argv[first..argc) for `moas train` or `moas compare`; throws UsageError (or RuntimeFailure for an
// unreadable --config file). Flags are --name VALUE or --name=VALUE; switches take no value.
ParsedOptions parse_train_arguments(int argc, char **argv, int first, bool for_compare);

// Applies assignments in order; throws UsageError on a bad value.
void apply_settings(TrainOptions &options, const std::vector<std::pair<std::string, std::string>> &assignments);

// Canonical text of every stored (non-Invocation) setting.
OptionValues option_values(const TrainOptions &options);

// Settings a resumed run takes from the checkpoint: `stored` for everything, then the user's assignments, which
// may not change Model, Optimizer (except --steps) or Data settings (UsageError naming the flag).
TrainOptions resumed_options(const OptionValues &stored, const TrainOptions &defaults,
                             const std::vector<std::pair<std::string, std::string>> &assignments);

// Auto values resolved.
int resolved_eval_every(const TrainOptions &options);
int resolved_log_every(const TrainOptions &options);
int resolved_save_every(const TrainOptions &options);  // 0: only at the end
double resolved_min_lr(const TrainOptions &options);

// What is wrong with the learning-rate schedule and how to fix it, or "" when nothing is: a --warmup that reaches
// --steps keeps the whole run in the linear warm-up. moas train and compare print it on stderr and train anyway.
std::string schedule_warning(const TrainOptions &options);

// The library's structs for these settings. vocab_size comes from the data.
moas_model_config make_model_config(const TrainOptions &options, int vocab_size);
moas_adamw_config make_adamw_config(const TrainOptions &options);

// Threads a model created with these settings will use (0 means every core available to this process).
int effective_threads(int requested);
// Where a run trains, for its first line: "2 CPU threads" or "CUDA device 0, fp32 products".
std::string describe_device(const TrainOptions &options);

// The flag table as help text.
std::string train_help(bool for_compare);

}  // namespace moas_cli
