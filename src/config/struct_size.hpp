// The C ABI's versioned structs (SPEC §8): a caller's struct_size says which fields it knows, and fields are only
// ever appended. These copies never touch a byte past it, so a program built against an older moas.h keeps working.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>

#include "base/error.hpp"

namespace moas {

// Writes `full` into the fields *out's struct_size covers; struct_size itself stays the caller's.
template <typename S>
void write_known_fields(S *out, const S &full) {
  const uint32_t caller_size = out->struct_size;
  std::memcpy(out, &full, std::min<size_t>(caller_size, sizeof full));
  out->struct_size = caller_size;
}

// The caller's struct as this library's: the fields it knows, `defaults` after them. A struct smaller than `oldest`
// (the first version's size) is MOAS_ERR_ABI_MISMATCH.
template <typename S>
S read_known_fields(const S &caller, S defaults, size_t oldest, const char *type) {
  MOAS_REQUIRE(caller.struct_size >= oldest, MOAS_ERR_ABI_MISMATCH,
               std::string(type) + ".struct_size is " + std::to_string(caller.struct_size) + ", expected at least " +
               std::to_string(oldest) + ": set struct_size = sizeof(" + type + ") and call " + type +
               "_default first");
  std::memcpy(&defaults, &caller, std::min<size_t>(caller.struct_size, sizeof defaults));
  return defaults;
}

}  // namespace moas
