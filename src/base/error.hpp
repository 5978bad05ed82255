// The one exception type of the core. src/api/c_api.cpp turns it into a status code and a per-thread message.
#pragma once

#include <stdexcept>
#include <string>

#include "moas.h"

namespace moas {

class Error : public std::runtime_error {
 public:
  Error(moas_status status, const std::string &message) : std::runtime_error(message), status_(status) {}
  moas_status status() const { return status_; }

 private:
  moas_status status_;
};

[[noreturn]] inline void fail(moas_status status, const std::string &message) { throw Error(status, message); }

}  // namespace moas

// Throws moas::Error(status, message) unless condition holds. A macro so that the message, often built from numbers
// and names, is built only on failure: checks sit on every call's path, which must not allocate.
#define MOAS_REQUIRE(condition, status, message)       \
  do {                                                 \
    if (!(condition)) ::moas::fail((status), (message)); \
  } while (0)
