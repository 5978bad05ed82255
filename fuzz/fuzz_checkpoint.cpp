// Any bytes as a model checkpoint: moas_model_create_from_file, then moas_model_load into the tiny model the seed
// corpus was saved from. Every outcome must be a status; a crash, a sanitizer report, a leak, a timeout or an
// allocation past -rss_limit_mb is a bug in the loader.
#include <cstdint>
#include <cstdlib>

#include "checkpoint/hostile_files.hpp"
#include "input_file.hpp"
#include "moas.h"

namespace {
moas_model *tiny = nullptr;
}

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  const moas_model_config cfg = hostile::tiny_config();
  if (moas_model_create(&cfg, &tiny) != MOAS_OK) std::abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static InputFile file;
  const std::string &path = file.write(data, size);
  const moas_model_config overrides = hostile::tiny_config();  // CPU, one thread
  moas_model *created = nullptr;
  if (moas_model_create_from_file(path.c_str(), &overrides, &created) == MOAS_OK) moas_model_destroy(created);
  (void)moas_model_load(tiny, path.c_str());
  return 0;
}
