#include "interrupt.hpp"

namespace moas_cli {

namespace {

volatile std::sig_atomic_t g_requested = 0;

void restore_default_actions() {
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigaction(SIGINT, &default_action, nullptr);
  sigaction(SIGTERM, &default_action, nullptr);
}

void record_interrupt(int signal) {
  g_requested = signal;
  restore_default_actions();  // sigaction is async-signal-safe
}

void catch_unless_ignored(int signal, struct sigaction *previous) {
  sigaction(signal, nullptr, previous);
  if (previous->sa_handler == SIG_IGN) return;
  struct sigaction action {};
  action.sa_handler = record_interrupt;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // a save's reads and writes go on after the handler
  sigaction(signal, &action, nullptr);
}

}  // namespace

InterruptRequests::InterruptRequests() {
  catch_unless_ignored(SIGINT, &previous_interrupt_);
  catch_unless_ignored(SIGTERM, &previous_terminate_);
}

InterruptRequests::~InterruptRequests() {
  sigaction(SIGINT, &previous_interrupt_, nullptr);
  sigaction(SIGTERM, &previous_terminate_, nullptr);
}

int requested_interrupt() { return g_requested; }

const char *signal_name(int signal) { return signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "a signal"; }

}  // namespace moas_cli
