#include "progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>

namespace moas_cli {

namespace {

std::string duration_text(double seconds) {
  const long s = seconds > 0 ? (long)(seconds + 0.5) : 0;
  char text[32];
  if (s >= 3600) std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else std::snprintf(text, sizeof text, "%ld:%02ld", s / 60, s % 60);
  return text;
}

// A status line wider than the terminal wraps, and "\r" would then redraw only its last row.
std::string fit_terminal(const std::string &text) {
  winsize size{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) != 0 || size.ws_col < 20 || text.size() < size.ws_col) return text;
  return text.substr(0, size.ws_col - 1);
}

}  // namespace

Progress::Progress(std::string label) : label_(std::move(label)), terminal_(isatty(STDOUT_FILENO) == 1) {}

std::string Progress::format(const StepReport &r) const {
  char head[256];
  char val[64] = "";
  if (r.val_loss >= 0) std::snprintf(val, sizeof val, "  val %.4f @ step %d", r.val_loss, r.val_step);
  std::snprintf(head, sizeof head, "step %*d/%d  loss %.4f%s  lr %.2e  %.0f tok/s  ETA %s",
                (int)std::to_string(r.steps).size(), r.step, r.steps, r.train_loss, val, r.lr, r.tokens_per_s,
                duration_text(r.eta_s).c_str());
  return head + (r.routing.empty() ? "" : "  " + r.routing);
}

void Progress::step(const StepReport &report, bool logged) {
  if (!terminal_) {
    if (logged) line(format(report));
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  if (!logged && status_shown_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  std::fputs(("\r\033[K" + fit_terminal(label_ + format(report))).c_str(), stdout);
  std::fflush(stdout);
  status_shown_ = true;
}

void Progress::line(const std::string &text) {
  if (status_shown_) std::fputs("\r\033[K", stdout);
  std::fputs((label_ + text + "\n").c_str(), stdout);
  std::fflush(stdout);
  status_shown_ = false;
}

void Progress::finish() {
  if (status_shown_) std::fputs("\n", stdout);
  std::fflush(stdout);
  status_shown_ = false;
}

}  // namespace moas_cli
