// moas: train, compare and sample small GPT models with mixtures of attention, through libmoas's C ABI only.
#include <moas.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <string>

#include "compare.hpp"
#include "errors.hpp"
#include "eval.hpp"
#include "generate.hpp"
#include "trainer.hpp"

namespace {

const char kUsage[] =
    "usage: moas <command> [flags]\n\n"
    "  train      train a model (the generated recall/copy task, or --data FILE)\n"
    "  compare    train MHA, GQA, MQA, static/soft/top-1 MoAS and MoH on the same budget and compare them\n"
    "  generate   sample text from a checkpoint with a KV cache\n"
    "  eval       a checkpoint's loss, perplexity and bits per token on a text file\n\n"
    "moas <command> --help lists the command's flags.\n";

// Messages are one line, whatever the library or the standard library put in them.
void report(const char *message) {
  std::string line = message;
  for (char &c : line)
    if (c == '\n' || c == '\r') c = ' ';
  std::fprintf(stderr, "moas: %s\n", line.c_str());
}

int dispatch(int argc, char **argv) {
  if (moas_abi_version() != MOAS_ABI_VERSION)
    throw moas_cli::RuntimeFailure("libmoas has ABI " + std::to_string(moas_abi_version()) +
                                   " but moas was built for " + std::to_string(MOAS_ABI_VERSION) +
                                   ": reinstall them together");
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "train") return moas_cli::run_train_command(argc, argv);
  if (command == "compare") return moas_cli::run_compare_command(argc, argv);
  if (command == "generate") return moas_cli::run_generate_command(argc, argv);
  if (command == "eval") return moas_cli::run_eval_command(argc, argv);
  const bool asks_help = command == "help" || command == "--help" || command == "-h";
  if ((asks_help || command == "--version") && argc > 2)
    throw moas_cli::UsageError(command + " takes no arguments, not '" + argv[2] +
                               "' (moas <command> --help lists a command's flags)");
  if (asks_help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (command == "--version") {
    std::printf("moas (libmoas %s)\n", moas_version_string());
    return 0;
  }
  if (command.empty()) throw moas_cli::UsageError("give a command: moas train, compare, generate or eval");
  throw moas_cli::UsageError("unknown command '" + command + "': use train, compare, generate or eval (moas --help)");
}

// Processes other than this one that are running right now (/proc/loadavg's fourth field counts the runnable
// ones, this process included); 0 when unknown.
int other_runnable_processes() {
  std::FILE *file = std::fopen("/proc/loadavg", "r");
  if (!file) return 0;
  double one, five, fifteen;
  int runnable = 0, total = 0;
  const int read = std::fscanf(file, "%lf %lf %lf %d/%d", &one, &five, &fifteen, &runnable, &total);
  std::fclose(file);
  return read == 5 && runnable > 1 ? runnable - 1 : 0;
}

// OpenMP's idle workers spin for milliseconds before they sleep: fastest on a quiet machine (passive waiting costs
// the tiny default models about a third), but against other busy processes it collapses training (the default tiny
// run: 24.8 s instead of 5.6 s with three busy processes per core). OpenMP reads its wait policy before main runs,
// so when the user chose none and the machine is busy, moas starts itself again with passive waiting.
void prefer_passive_waiting_when_busy(char **argv) {
  if (std::getenv("OMP_WAIT_POLICY")) return;
  // Busy: at least one other runnable process per core, in each of three looks 5 ms apart (a shell or a short
  // command that happens to run at start is not load).
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int fewest = other_runnable_processes();
  for (int look = 1; look < 3 && fewest >= cores; look++) {
    usleep(5000);
    fewest = std::min(fewest, other_runnable_processes());
  }
  if (fewest < cores) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  execv("/proc/self/exe", argv);  // only returns on failure: go on spinning
}

}  // namespace

int main(int argc, char **argv) {
  prefer_passive_waiting_when_busy(argv);
  try {
    return dispatch(argc, argv);
  } catch (const moas_cli::UsageError &e) {
    report(e.what());
    return 2;
  } catch (const std::bad_alloc &) {
    report("out of memory: use a smaller --batch, --block or model");
    return 1;
  } catch (const std::exception &e) {
    report(e.what());
    return 1;
  }
}
