// `moas eval`: the mean cross-entropy of a checkpoint on a text file, over fixed, evenly spaced windows.
#pragma once

namespace moas_cli {

// Returns the exit code.
int run_eval_command(int argc, char **argv);

}  // namespace moas_cli
