// Any bytes as a checkpoint's config metadata: first moas::from_json on the raw text, then (when the text is UTF-8,
// as a JSON string must be) as the "config" of an otherwise intact checkpoint of the tiny model, given to
// moas_model_create_from_file and moas_model_load. A config that describes a large model must be refused for the
// file's small tensors before anything of that size is allocated.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "base/error.hpp"
#include "checkpoint/hostile_files.hpp"
#include "config/config.hpp"
#include "input_file.hpp"
#include "moas.h"

namespace {
moas_model *tiny = nullptr;
hostile::Safetensors *checkpoint = nullptr;  // the tiny model's, whose config each input replaces
}

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  const moas_model_config cfg = hostile::tiny_config();
  if (moas_model_create(&cfg, &tiny) != MOAS_OK) std::abort();
  const std::string path =
      (std::filesystem::temp_directory_path() / ("moas_fuzz_config_" + std::to_string(getpid()))).string();
  if (moas_model_save(tiny, path.c_str(), nullptr) != MOAS_OK) std::abort();
  checkpoint = new hostile::Safetensors(hostile::Safetensors::parse(hostile::read_bytes(path)));
  std::filesystem::remove(path);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string text(reinterpret_cast<const char *>(data), size);
  try {
    (void)moas::from_json(text, "fuzz input");
  } catch (const moas::Error &) {
  }
  hostile::Bytes bytes;
  try {
    checkpoint->metadata()["config"] = text;
    bytes = checkpoint->build();
  } catch (const nlohmann::json::type_error &) {  // not UTF-8: no JSON string can carry it
    return 0;
  }
  static InputFile file;
  const std::string &path = file.write(bytes.data(), bytes.size());
  const moas_model_config overrides = hostile::tiny_config();  // CPU, one thread
  moas_model *created = nullptr;
  if (moas_model_create_from_file(path.c_str(), &overrides, &created) == MOAS_OK) moas_model_destroy(created);
  (void)moas_model_load(tiny, path.c_str());
  return 0;
}
