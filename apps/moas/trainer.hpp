// The training loop (schedule, batches, validation, metrics, checkpoints) and the `moas train` command.
#pragma once

#include <moas.h>

#include <string>
#include <utility>
#include <vector>

#include "checkpoint.hpp"
#include "dataset.hpp"
#include "options.hpp"
#include "progress.hpp"
#include "routing.hpp"

namespace moas_cli {

// A model ready to train, and everything its loop reads.
struct TrainingSetup {
  const TrainOptions &options;
  const Corpus &corpus;
  moas_model *model;
  moas_model_config config;
  RunFiles files;
  int start_step;  // 0, or the step of the checkpoint being resumed
};

struct TrainOutcome {
  int first_step = 0, last_step = 0;  // this invocation's steps: first_step + 1 .. last_step
  double first_train_loss = 0, last_train_loss = 0;
  double val_loss = 0;                          // at last_step
  std::vector<std::pair<int, double>> val_curve;  // (step, validation loss) of this invocation
  double tokens_per_s = 0;                      // over the training steps (validation and saving excluded)
  RoutingSummary routing;                       // over the last validation's batches
  int interrupted_by = 0;  // the signal that stopped the run early, after saving the checkpoint of last_step; or 0
};

// Trains to options.stop_at (or options.steps), validating every eval-every steps, logging every log-every steps
// into DIR/metrics.jsonl, and writing the checkpoint every save-every steps, at the end, and at the step boundary
// after an interrupt request (interrupt.hpp). A fresh run (start_step 0) first discards a checkpoint already in DIR.
TrainOutcome run_training(const TrainingSetup &setup, Progress &progress);

// The learning rate of step (0-based): linear warm-up over `warmup` steps, then cosine decay to min-lr at the
// schedule's last step.
double learning_rate(const TrainOptions &options, int step);

// Lines that say what is about to be trained (printed at the start of train and compare).
std::string describe_model(const moas_model_config &config, uint64_t parameters);
std::string describe_training(const TrainOptions &options, const Corpus &corpus);

// `moas train [flags]`: returns the exit code.
int run_train_command(int argc, char **argv);

}  // namespace moas_cli
