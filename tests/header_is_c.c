/* Compiled as C99 with -Wpedantic -Werror: proves moas.h is C (no C++ types, no C++-only syntax). */
#include "moas.h"

uint32_t moas_header_check_abi(void) { return MOAS_ABI_VERSION + (uint32_t)sizeof(moas_model_config); }
