// The layer API's config: defaults (RustGPT's attention shape) and validation, which maps the layer's fields onto
// a one-layer model config so both APIs accept and refuse exactly the same attention settings with the same words.
#pragma once

#include "config.hpp"
#include "moas.h"

namespace moas {

void fill_layer_default(moas_layer_config *cfg);

// Throws moas::Error (MOAS_ERR_INVALID_CONFIG, ABI_MISMATCH, DEVICE_UNAVAILABLE) naming the field and the fix.
ModelConfig validate_layer(const moas_layer_config &cfg);

}  // namespace moas
