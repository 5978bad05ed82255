// Numbers as the CLI prints them in progress lines, tables and summaries.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace moas_cli {

// value through a printf pattern for one double ("%.4f", "%g").
inline std::string fixed(double value, const char *format) {
  char text[64];
  std::snprintf(text, sizeof text, format, value);
  return text;
}

// A count with thousands separators: 7,204,608.
inline std::string thousands(uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); i++) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace moas_cli
