#pragma once

namespace moas {
// MOAS_VERSION_STRING comes from the project() version in CMakeLists.txt.
constexpr const char *kVersion = MOAS_VERSION_STRING;
}  // namespace moas
