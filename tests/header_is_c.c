/* Compiled as C11 with -Wpedantic -Werror: proves moas.h is C (no C++ types, no C++-only syntax), and pins the
 * ABI 1 layout of every struct. A change here must be an append, recorded in CHANGELOG.md. */
#include <stddef.h>

#include "moas.h"

_Static_assert(sizeof(moas_model_config) == 96, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, vocab_size) == 8, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, dropout) == 56, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, seed) == 72, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, device_index) == 88, "moas_model_config layout changed");
_Static_assert(sizeof(moas_adamw_config) == 28, "moas_adamw_config layout changed");
_Static_assert(offsetof(moas_adamw_config, grad_clip) == 24, "moas_adamw_config layout changed");
_Static_assert(sizeof(moas_parameter_info) == 56, "moas_parameter_info layout changed");
_Static_assert(offsetof(moas_parameter_info, name) == 8, "moas_parameter_info layout changed");
_Static_assert(offsetof(moas_parameter_info, shape) == 16, "moas_parameter_info layout changed");
_Static_assert(offsetof(moas_parameter_info, numel) == 48, "moas_parameter_info layout changed");
_Static_assert(sizeof(moas_layer_router_stats) == 540, "moas_layer_router_stats layout changed");
_Static_assert(offsetof(moas_layer_router_stats, balance) == 520, "moas_layer_router_stats layout changed");
_Static_assert(offsetof(moas_layer_router_stats, aux_loss) == 536, "moas_layer_router_stats layout changed");
_Static_assert(sizeof(moas_status) == 4, "moas_status must stay int-sized");

uint32_t moas_header_check_abi(void) { return MOAS_ABI_VERSION; }
