// How the CLI fails: every error is one line on stderr and an exit code that says whose move it is.
#pragma once

#include <moas.h>

#include <stdexcept>
#include <string>

namespace moas_cli {

// The user asked for something impossible (a flag, a value, a prompt): exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Something went wrong while doing what was asked (a file, a checkpoint, the library): exit code 1.
struct RuntimeFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws unless status is MOAS_OK. An invalid config is the user's to fix (exit 2); everything else is a runtime
// failure. The message carries moas_status_string and moas_last_error so the library's advice reaches the user.
inline void check_status(moas_status status, const std::string &what) {
  if (status == MOAS_OK) return;
  const std::string message = what + ": " + moas_status_string(status) + ": " + moas_last_error();
  if (status == MOAS_ERR_INVALID_CONFIG) throw UsageError(message);
  throw RuntimeFailure(message);
}

}  // namespace moas_cli
