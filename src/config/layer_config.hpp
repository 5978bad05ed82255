// The layer API's config: defaults (RustGPT's attention shape) and validation, which maps the layer's fields onto
// a one-layer model config so both APIs accept and refuse exactly the same attention settings with the same words.
#pragma once

#include <cstddef>

#include "config/config.hpp"
#include "moas.h"

namespace moas {

// The smallest struct_size accepted: the fields of libmoas 0.3.0 (the first layer API). Later fields take their
// defaults when the caller's struct ends before them.
constexpr size_t kLayerConfigV1Size = offsetof(moas_layer_config, matmul_precision);

void fill_layer_default(moas_layer_config *cfg);

// Throws moas::Error (MOAS_ERR_INVALID_CONFIG, ABI_MISMATCH, DEVICE_UNAVAILABLE) naming the field and the fix.
ModelConfig validate_layer(const moas_layer_config &cfg);

// The inverse of validate_layer, for moas_layer_get_config (MoAS branch kv heads come back resolved: n_head, not 0).
void to_layer_c(const ModelConfig &config, bool residual, moas_layer_config *out);

}  // namespace moas
