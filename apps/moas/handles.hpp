// Owning handles for the library's objects, so every early exit frees them.
#pragma once

#include <moas.h>

#include <memory>
#include <string>

#include "errors.hpp"

namespace moas_cli {

struct ModelDeleter {
  void operator()(moas_model *model) const { moas_model_destroy(model); }
};
struct KvCacheDeleter {
  void operator()(moas_kv_cache *cache) const { moas_kv_cache_destroy(cache); }
};
using ModelPtr = std::unique_ptr<moas_model, ModelDeleter>;
using KvCachePtr = std::unique_ptr<moas_kv_cache, KvCacheDeleter>;

inline ModelPtr create_model(const moas_model_config &config) {
  moas_model *model = nullptr;
  check_status(moas_model_create(&config, &model), "model config");
  return ModelPtr(model);
}

inline KvCachePtr create_kv_cache(const moas_model *model, int capacity) {
  moas_kv_cache *cache = nullptr;
  check_status(moas_kv_cache_create(model, /*batch=*/1, capacity, &cache), "moas_kv_cache_create");
  return KvCachePtr(cache);
}

// Bytes of keys and values one cached position takes for this model's architecture.
inline uint64_t kv_cache_bytes_per_token(const moas_model *model) {
  const KvCachePtr cache = create_kv_cache(model, 1);
  uint64_t bytes = 0;
  check_status(moas_kv_cache_bytes_per_token(cache.get(), &bytes), "moas_kv_cache_bytes_per_token");
  return bytes;
}

inline uint64_t parameter_count(const moas_model *model) {
  uint64_t n = 0;
  check_status(moas_model_num_parameters(model, &n), "moas_model_num_parameters");
  return n;
}

}  // namespace moas_cli
