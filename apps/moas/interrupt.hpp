// Ctrl-C (SIGINT) and SIGTERM during `moas train`: the first asks the training loop to save a checkpoint at the next
// step boundary and stop, rather than lose the steps since the last save. The handler only records the signal (all
// it may safely do) and restores the default action, so a second signal, say during that save, ends the process at
// once: the previous checkpoint pair is complete whatever moment that comes.
#pragma once

#include <csignal>

namespace moas_cli {

// Catches SIGINT and SIGTERM while it lives. A signal this process was started ignoring (a background job of a
// script ignores SIGINT) stays ignored.
class InterruptRequests {
 public:
  InterruptRequests();
  ~InterruptRequests();
  InterruptRequests(const InterruptRequests &) = delete;
  InterruptRequests &operator=(const InterruptRequests &) = delete;

 private:
  struct sigaction previous_interrupt_, previous_terminate_;
};

// The signal that asked the run to stop (SIGINT or SIGTERM), or 0.
int requested_interrupt();

// "SIGINT", "SIGTERM".
const char *signal_name(int signal);

}  // namespace moas_cli
