// Numbers in flags and --config files are plain decimals ("3e-4", "-1", "12"): std::from_chars, unlike strtod and
// strtoll, takes no leading space, no '+', no hex ("0x1p-3") and no locale, so what a checkpoint records is what the
// user typed and a typo is an error rather than a different number.
#pragma once

#include <charconv>
#include <cmath>
#include <optional>
#include <string>
#include <type_traits>

namespace moas_cli {

// The whole of text as a Number; nullopt for anything else, a value out of Number's range, or an infinity or NaN.
template <typename Number>
std::optional<Number> parse_decimal(const std::string &text) {
  Number value{};
  const char *const end = text.data() + text.size();
  const std::from_chars_result result = std::from_chars(text.data(), end, value);
  if (result.ec != std::errc() || result.ptr != end) return std::nullopt;
  if constexpr (std::is_floating_point_v<Number>) {
    if (!std::isfinite(value)) return std::nullopt;
  }
  return value;
}

}  // namespace moas_cli
