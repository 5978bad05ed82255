// What a run shows while it trains: on a terminal one status line redrawn in place; elsewhere plain log lines.
#pragma once

#include <chrono>
#include <string>

namespace moas_cli {

struct StepReport {
  int step = 0;             // optimizer steps done
  int steps = 0;            // the schedule's length
  double train_loss = 0;
  double val_loss = -1;     // the last validation, or < 0 before the first
  int val_step = 0;         // the step that validation measured: shown, as it is usually not this step
  double lr = 0;
  double tokens_per_s = 0;
  double eta_s = 0;
  std::string routing;      // compact_routing of the last forward
};

class Progress {
 public:
  // label prefixes every line (e.g. "[gqa 2/7] " in moas compare).
  explicit Progress(std::string label);

  // Called after every step: a terminal gets the status line (redrawn at most ten times a second, and at every
  // logged step); anything else gets a line at logged steps only.
  void step(const StepReport &report, bool logged);
  // A line that stays (settings, validation, checkpoints): the status line is cleared first.
  void line(const std::string &text);
  // Ends the status line so later output starts on a fresh line.
  void finish();

 private:
  std::string format(const StepReport &report) const;

  std::string label_;
  bool terminal_;
  bool status_shown_ = false;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace moas_cli
