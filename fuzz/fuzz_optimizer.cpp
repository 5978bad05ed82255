// Any bytes as optimiser state: moas_optimizer_load into the tiny model, and when it loads, an AdamW step on that
// state (a loaded state must never make a step misbehave). Every outcome must be a status.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "checkpoint/hostile_files.hpp"
#include "input_file.hpp"
#include "moas.h"

namespace {
moas_model *tiny = nullptr;
moas_adamw_config adamw;
}

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  const moas_model_config cfg = hostile::tiny_config();
  adamw.struct_size = sizeof adamw;
  if (moas_model_create(&cfg, &tiny) != MOAS_OK || moas_adamw_config_default(&adamw) != MOAS_OK) std::abort();
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8}, targets = {2, 3, 4, 5, 6, 7, 8, 9};
  if (moas_forward(tiny, tokens.data(), targets.data(), 1, 8, 1, nullptr, nullptr) != MOAS_OK ||
      moas_backward(tiny) != MOAS_OK || moas_optimizer_step(tiny, &adamw, nullptr) != MOAS_OK)
    std::abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static InputFile file;
  const std::string &path = file.write(data, size);
  if (moas_optimizer_load(tiny, path.c_str()) == MOAS_OK) (void)moas_optimizer_step(tiny, &adamw, nullptr);
  return 0;
}
