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

inline void require(bool condition, moas_status status, const std::string &message) {
  if (!condition) fail(status, message);
}

}  // namespace moas
