/* Compiled as C11 with -Wpedantic -Werror: proves moas.h is C (no C++ types, no C++-only syntax), and pins the
 * ABI 1 layout of every struct. A change here must be an append, recorded in CHANGELOG.md: the 0.1.0 offsets below
 * never move, and each later field is pinned where it was appended. */
#include <stddef.h>

#include "moas.h"

_Static_assert(sizeof(moas_model_config) == 168, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, vocab_size) == 8, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, dropout) == 56, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, seed) == 72, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, device_index) == 88, "moas_model_config layout changed");
/* appended in 0.2.0 */
_Static_assert(offsetof(moas_model_config, moas_mode) == 96, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, moas_branch_kv_heads) == 104, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, moas_aux_weight) == 120, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, head_selection) == 124, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, reserved1) == 148, "moas_model_config layout changed");
/* appended in 0.3.0 */
_Static_assert(offsetof(moas_model_config, cope_max_pos) == 152, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, window_size) == 156, "moas_model_config layout changed");
/* appended in 0.5.0 */
_Static_assert(offsetof(moas_model_config, matmul_precision) == 160, "moas_model_config layout changed");
_Static_assert(offsetof(moas_model_config, reserved2) == 164, "moas_model_config layout changed");
_Static_assert(sizeof(moas_layer_config) == 136, "moas_layer_config layout changed");
_Static_assert(offsetof(moas_layer_config, n_embd) == 8, "moas_layer_config layout changed");
_Static_assert(offsetof(moas_layer_config, dropout) == 52, "moas_layer_config layout changed");
_Static_assert(offsetof(moas_layer_config, moas_branch_kv_heads) == 64, "moas_layer_config layout changed");
_Static_assert(offsetof(moas_layer_config, head_selection) == 84, "moas_layer_config layout changed");
_Static_assert(offsetof(moas_layer_config, seed) == 112, "moas_layer_config layout changed");
_Static_assert(offsetof(moas_layer_config, device_index) == 124, "moas_layer_config layout changed");
/* appended in 0.5.0 */
_Static_assert(offsetof(moas_layer_config, matmul_precision) == 128, "moas_layer_config layout changed");
_Static_assert(offsetof(moas_layer_config, reserved0) == 132, "moas_layer_config layout changed");
_Static_assert(sizeof(moas_head_selection) == 24, "moas_head_selection layout changed");
_Static_assert(offsetof(moas_head_selection, load_balance_weight) == 16, "moas_head_selection layout changed");
_Static_assert(sizeof(moas_adamw_config) == 28, "moas_adamw_config layout changed");
_Static_assert(offsetof(moas_adamw_config, grad_clip) == 24, "moas_adamw_config layout changed");
_Static_assert(sizeof(moas_parameter_info) == 56, "moas_parameter_info layout changed");
_Static_assert(offsetof(moas_parameter_info, name) == 8, "moas_parameter_info layout changed");
_Static_assert(offsetof(moas_parameter_info, shape) == 16, "moas_parameter_info layout changed");
_Static_assert(offsetof(moas_parameter_info, numel) == 48, "moas_parameter_info layout changed");
_Static_assert(sizeof(moas_layer_router_stats) == 808, "moas_layer_router_stats layout changed");
_Static_assert(offsetof(moas_layer_router_stats, top_share) == 540, "moas_layer_router_stats layout changed");
_Static_assert(offsetof(moas_layer_router_stats, attention) == 804, "moas_layer_router_stats layout changed");
_Static_assert(offsetof(moas_layer_router_stats, balance) == 520, "moas_layer_router_stats layout changed");
_Static_assert(offsetof(moas_layer_router_stats, aux_loss) == 536, "moas_layer_router_stats layout changed");
_Static_assert(sizeof(moas_status) == 4, "moas_status must stay int-sized");

uint32_t moas_header_check_abi(void) { return MOAS_ABI_VERSION; }
