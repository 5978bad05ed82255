// moas: train, compare and sample small GPT models with mixtures of attention, through libmoas's C ABI only.
#include <moas.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <string>

#include "compare.hpp"
#include "errors.hpp"
#include "generate.hpp"
#include "trainer.hpp"

namespace {

const char kUsage[] =
    "usage: moas <command> [flags]\n\n"
    "  train      train a model (the generated recall/copy task, or --data FILE)\n"
    "  compare    train MHA, GQA, MQA, static/soft/top-1 MoAS and MoH on the same budget and compare them\n"
    "  generate   sample text from a checkpoint with a KV cache\n\n"
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
  if (command == "help" || command == "--help" || command == "-h") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (command == "--version") {
    std::printf("moas (libmoas %s)\n", moas_version_string());
    return 0;
  }
  if (command.empty()) throw moas_cli::UsageError("give a command: moas train, moas compare or moas generate");
  throw moas_cli::UsageError("unknown command '" + command + "': use train, compare or generate (moas --help)");
}

// OpenMP's idle workers spin for milliseconds before they sleep, which is fastest on a quiet machine and collapses
// training when other processes share the cores (the default tiny run: 24 s instead of 5.5 s with three busy
// processes per core). OpenMP reads its wait policy before main runs, so unless the user chose one, moas starts
// itself again with passive waiting (about 3% at the paper's shape, a quarter on the tiny run, when quiet).
void prefer_passive_waiting(char **argv) {
  if (std::getenv("OMP_WAIT_POLICY")) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  execv("/proc/self/exe", argv);  // only returns on failure: go on spinning
}

}  // namespace

int main(int argc, char **argv) {
  prefer_passive_waiting(argv);
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
