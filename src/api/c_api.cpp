// The C ABI: the one place where C++ exceptions become status codes and a per-thread message. Every entry point
// validates its arguments completely before it touches the model, so a failed call leaves the model as it was.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "api/c_api_support.hpp"
#include "base/error.hpp"
#include "base/gemm.hpp"
#include "base/parallel.hpp"
#include "base/version.hpp"
#include "checkpoint/checkpoint.hpp"
#include "config/config.hpp"
#include "cuda_host/cuda_loader.hpp"
#include "cuda_host/cuda_model.hpp"
#include "moas.h"
#include "model/decode_reads.hpp"
#include "model/model.hpp"
#include "ops/adamw.hpp"

struct moas_model {
  explicit moas_model(const moas::ModelConfig &config) : model(config) {
    if (config.device == MOAS_DEVICE_CUDA)
      device = std::make_unique<moas::CudaModel>(*moas::cuda_backend().table, config.device_index, model);
  }
  // The model on the CPU; with device = MOAS_DEVICE_CUDA, the host mirror of `device`, which runs it (cuda_model.hpp):
  // reads of weights, gradients and optimiser state download into the mirror first, writes upload after.
  moas::Model<float> model;
  std::unique_ptr<moas::CudaModel> device;

  // The CUDA model (null on the CPU), its device made current for the calling thread.
  moas::CudaModel *on_device() const {
    if (device) device->use_device();
    return device.get();
  }
  int64_t last_batch() const { return device ? device->last_batch() : model.last_batch(); }
  int64_t last_seq() const { return device ? device->last_seq() : model.last_seq(); }
};

// A CPU model's cache in host memory, or a CUDA model's in its device memory (`device` set): config.device and
// device_index say which, so that a cache meets only models of its kind.
struct moas_kv_cache {
  moas::ModelConfig config;  // the architecture (and device) it is laid out for
  moas::DecodeReads reads;   // of config, for moas_decode_read_bytes: a generator may ask before every step
  moas::KvCache<float> host;
  std::unique_ptr<moas::CudaKvCache> device;

  // f(the cache in use): both kinds share KvCacheOf's bookkeeping.
  template <typename F>
  auto visit(F &&f) const {
    return device ? f(*device) : f(host);
  }
  template <typename F>
  auto visit(F &&f) {
    return device ? f(*device) : f(host);
  }
};

namespace {

using namespace moas::capi;

// "MOAS_DEVICE_CPU" or "MOAS_DEVICE_CUDA device <index>": where a model's (and its caches') memory is.
std::string device_name(const moas::ModelConfig &c) {
  return c.device == MOAS_DEVICE_CUDA ? "MOAS_DEVICE_CUDA device " + std::to_string(c.device_index)
                                      : std::string("MOAS_DEVICE_CPU");
}

// A layer index of the model's: MOAS_ERR_INDEX_OUT_OF_RANGE naming the range otherwise.
void require_layer(const moas_model &model, int32_t layer) {
  const int64_t n_layer = model.model.config().n_layer;
  MOAS_REQUIRE(layer >= 0 && layer < n_layer, MOAS_ERR_INDEX_OUT_OF_RANGE,
               "layer " + std::to_string(layer) + " is outside [0, " + std::to_string(n_layer) + ")");
}

void check_tokens(const moas::ModelConfig &c, const int32_t *tokens, const int32_t *targets, int32_t batch,
                  int32_t seq_len) {
  require_arg(tokens, "tokens");
  MOAS_REQUIRE(batch >= 1 && seq_len >= 1, MOAS_ERR_SIZE_MISMATCH,
               "batch (" + std::to_string(batch) + ") and seq_len (" + std::to_string(seq_len) + ") must be >= 1");
  MOAS_REQUIRE(seq_len <= c.block_size, MOAS_ERR_CONTEXT_TOO_LONG,
               "seq_len " + std::to_string(seq_len) + " exceeds the model's block_size " +
               std::to_string(c.block_size) + ": pass at most block_size tokens per sequence");
  const int64_t n = (int64_t)batch * seq_len;
  MOAS_REQUIRE(n <= (int64_t)1 << 24, MOAS_ERR_SIZE_MISMATCH,
               "batch * seq_len = " + std::to_string(n) + " tokens is more than 2^24 per call: split the batch");
  for (int64_t i = 0; i < n; i++)
    MOAS_REQUIRE(tokens[i] >= 0 && tokens[i] < c.vocab_size, MOAS_ERR_TOKEN_OUT_OF_RANGE,
                 "tokens[" + std::to_string(i) + "] = " + std::to_string(tokens[i]) + " is outside [0, " +
                 std::to_string(c.vocab_size) + ")");
  if (targets)
    for (int64_t i = 0; i < n; i++)
      MOAS_REQUIRE(targets[i] >= -1 && targets[i] < c.vocab_size, MOAS_ERR_TARGET_OUT_OF_RANGE,
                   "targets[" + std::to_string(i) + "] = " + std::to_string(targets[i]) + " is outside [-1, " +
                   std::to_string(c.vocab_size) + "): use -1 for positions without a target");
}

// After a forward whose outputs are not finite: nothing of it may be used (backward, logits) and its dropout draw
// did not happen, so the model is as it was before the call.
void forget_forward(moas_model &model, uint64_t training_forwards) {
  model.model.invalidate_activations();
  if (model.device) model.on_device()->invalidate_activations();
  model.model.training_forwards = training_forwards;
}

// A finite loss can hide non-finite logits (positions without a target), and a forward without targets has no loss.
void require_finite_logits(moas_model &model, uint64_t training_forwards) {
  const moas::Model<float> &m = model.model;
  const size_t n = (size_t)(m.last_batch() * m.last_seq() * m.config().vocab_size);
  const bool finite = model.device ? model.on_device()->logits_finite() : moas::all_finite(m.logits().data(), n);
  if (finite) return;
  forget_forward(model, training_forwards);
  moas::fail(MOAS_ERR_NON_FINITE, "the logits hold NaN/Inf: the weights are too large or diverged (e.g. values written "
                                  "or loaded that overflow); reload a checkpoint or lower the learning rate");
}

void fill_router_stats(const moas_model &model, int64_t layer, moas_layer_router_stats *out) {
  const moas::Model<float> &m = model.model;
  require_struct(out->struct_size, kRouterStatsV1Size, "moas_layer_router_stats");
  MOAS_REQUIRE(model.last_batch() > 0, MOAS_ERR_NO_FORWARD,
               "no forward has run yet: router statistics come from the last moas_forward");
  moas::RouterStats st;
  if (!(model.device ? model.on_device()->router_stats(layer, &st) : m.router_stats(layer, &st))) {
    const char *why = m.config().attention == moas::AttentionKind::Scheme
                          ? "this model uses one attention scheme (MHA/GQA/MQA)"
                          : "its head selection (AllHeads or StaticPruning) uses no router";
    moas::fail(MOAS_ERR_NO_ROUTER, "layer " + std::to_string(layer) + " has no router: " + why);
  }
  copy_router_stats(st, out);
}

}  // namespace

extern "C" {

const char *moas_status_string(moas_status status) {
  switch (status) {
#define MOAS_NAME(s) \
  case s:            \
    return #s;
    MOAS_NAME(MOAS_OK)
    MOAS_NAME(MOAS_ERR_NULL_ARGUMENT)
    MOAS_NAME(MOAS_ERR_INVALID_CONFIG)
    MOAS_NAME(MOAS_ERR_ABI_MISMATCH)
    MOAS_NAME(MOAS_ERR_SIZE_MISMATCH)
    MOAS_NAME(MOAS_ERR_TOKEN_OUT_OF_RANGE)
    MOAS_NAME(MOAS_ERR_TARGET_OUT_OF_RANGE)
    MOAS_NAME(MOAS_ERR_CONTEXT_TOO_LONG)
    MOAS_NAME(MOAS_ERR_NO_FORWARD)
    MOAS_NAME(MOAS_ERR_NON_FINITE)
    MOAS_NAME(MOAS_ERR_UNKNOWN_PARAMETER)
    MOAS_NAME(MOAS_ERR_IO)
    MOAS_NAME(MOAS_ERR_CHECKPOINT_TRUNCATED)
    MOAS_NAME(MOAS_ERR_CHECKPOINT_HEADER)
    MOAS_NAME(MOAS_ERR_CHECKPOINT_LAYOUT)
    MOAS_NAME(MOAS_ERR_CHECKPOINT_MISSING_TENSOR)
    MOAS_NAME(MOAS_ERR_CHECKPOINT_UNEXPECTED_TENSOR)
    MOAS_NAME(MOAS_ERR_CHECKPOINT_SHAPE)
    MOAS_NAME(MOAS_ERR_CHECKPOINT_DTYPE)
    MOAS_NAME(MOAS_ERR_CHECKPOINT_CONFIG)
    MOAS_NAME(MOAS_ERR_NO_ROUTER)
    MOAS_NAME(MOAS_ERR_DEVICE_UNAVAILABLE)
    MOAS_NAME(MOAS_ERR_OUT_OF_MEMORY)
    MOAS_NAME(MOAS_ERR_INDEX_OUT_OF_RANGE)
    MOAS_NAME(MOAS_ERR_INTERNAL)
    MOAS_NAME(MOAS_ERR_CONTEXT_FULL)
    MOAS_NAME(MOAS_ERR_INVALID_ARGUMENT)
    MOAS_NAME(MOAS_ERR_CHECKPOINT_VALUE)
#undef MOAS_NAME
  }
  return "MOAS_ERR_UNKNOWN_STATUS";
}

const char *moas_last_error(void) { return moas::capi::last_error.c_str(); }

uint32_t moas_abi_version(void) { return MOAS_ABI_VERSION; }

const char *moas_version_string(void) { return moas::kVersion; }

const char *moas_build_info(void) {
#if defined(__AVX512F__)
  constexpr const char *isa = "AVX-512";
#elif defined(__AVX2__)
  constexpr const char *isa = "AVX2";
#else
  constexpr const char *isa = "baseline";
#endif
  static const std::string info = std::string("libmoas ") + moas::kVersion + "; float GEMM " +
                                  moas::gemm_backend_name() + "; kernels " + isa + "; " +
                                  std::to_string(omp_get_num_procs()) + " CPU threads";
  return info.c_str();
}

moas_status moas_model_config_default(moas_model_config *cfg) {
  return guarded([&] {
    require_arg(cfg, "cfg");
    require_struct(cfg->struct_size, sizeof(uint32_t), "moas_model_config");
    moas::fill_default(cfg);
  });
}

moas_status moas_model_create(const moas_model_config *cfg, moas_model **out) {
  return guarded([&] {
    require_arg(cfg, "cfg");
    require_arg(out, "out");
    *out = nullptr;
    const moas::ModelConfig config = moas::validate(*cfg);
    moas::ThreadScope threads(config.n_threads);
    *out = new moas_model(config);
  });
}

void moas_model_destroy(moas_model *model) { delete model; }

moas_status moas_model_get_config(const moas_model *model, moas_model_config *out) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(out, "out");
    require_struct(out->struct_size, sizeof(uint32_t), "moas_model_config");
    moas::to_c(model->model.config(), out);
  });
}

moas_status moas_model_num_parameters(const moas_model *model, uint64_t *out) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(out, "out");
    *out = (uint64_t)model->model.params.total();
  });
}

moas_status moas_forward(moas_model *model, const int32_t *tokens, const int32_t *targets, int32_t batch,
                         int32_t seq_len, int32_t training, float *loss_out, float *aux_out) {
  return guarded([&] {
    require_arg(model, "model");
    moas::Model<float> &m = model->model;
    check_tokens(m.config(), tokens, targets, batch, seq_len);
    MOAS_REQUIRE(training == 0 || training == 1, MOAS_ERR_INVALID_CONFIG,
                 "training is " + std::to_string(training) + ": use 0 (eval) or 1 (training)");
    moas::ThreadScope threads(m.config().n_threads);
    const uint64_t forwards = m.training_forwards;
    const double loss = model->device ? model->on_device()->forward(tokens, targets, batch, seq_len, training == 1)
                                      : m.forward(tokens, targets, batch, seq_len, training == 1);
    if (loss_out) *loss_out = (float)loss;
    if (aux_out) *aux_out = (float)(model->device ? model->on_device()->aux_loss() : m.aux_loss());
    if (!std::isfinite(loss)) forget_forward(*model, forwards);
    MOAS_REQUIRE(std::isfinite(loss), MOAS_ERR_NON_FINITE,
                 "the loss is not finite (" + std::to_string(loss) + "): the weights hold NaN/Inf or diverged; "
                 "reload a checkpoint or lower the learning rate");
    require_finite_logits(*model, forwards);
  });
}

moas_status moas_logits(const moas_model *model, float *out, size_t out_len) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(out, "out");
    const moas::Model<float> &m = model->model;
    MOAS_REQUIRE(model->last_batch() > 0, MOAS_ERR_NO_FORWARD, "no forward has run yet: call moas_forward first");
    const size_t n = (size_t)(model->last_batch() * model->last_seq() * m.config().vocab_size);
    MOAS_REQUIRE(out_len == n, MOAS_ERR_SIZE_MISMATCH,
                 "out_len is " + std::to_string(out_len) + " but the last forward produced batch * seq_len * "
                 "vocab_size = " + std::to_string(n) + " logits");
    if (model->device) model->on_device()->logits(out);
    else std::memcpy(out, m.logits().data(), n * sizeof(float));
  });
}

moas_status moas_backward(moas_model *model) {
  return guarded([&] {
    require_arg(model, "model");
    moas::Model<float> &m = model->model;
    MOAS_REQUIRE(model->device ? model->on_device()->can_backward() : m.can_backward(), MOAS_ERR_NO_FORWARD,
                 "moas_backward needs a preceding moas_forward with training = 1 and targets (and no backward, "
                 "parameter write, load or optimizer step since): one backward per forward");
    moas::ThreadScope threads(m.config().n_threads);
    if (model->device) model->on_device()->backward();
    else m.backward();
  });
}

moas_status moas_zero_grad(moas_model *model) {
  return guarded([&] {
    require_arg(model, "model");
    std::fill(model->model.params.grads.begin(), model->model.params.grads.end(), 0.0f);
    if (model->device) model->on_device()->zero_grad();
  });
}

moas_status moas_adamw_config_default(moas_adamw_config *cfg) {
  return guarded([&] {
    require_arg(cfg, "cfg");
    require_struct(cfg->struct_size, sizeof(uint32_t), "moas_adamw_config");
    moas::write_known_fields(cfg, adamw_default());
  });
}

moas_status moas_adamw_config_rustgpt(moas_adamw_config *cfg) {
  return guarded([&] {
    require_arg(cfg, "cfg");
    require_struct(cfg->struct_size, sizeof(uint32_t), "moas_adamw_config");
    moas::write_known_fields(cfg, adam_rustgpt());
  });
}

moas_status moas_optimizer_step(moas_model *model, const moas_adamw_config *cfg, float *grad_norm_out) {
  return guarded([&] {
    require_arg(model, "model");
    moas::Model<float> &m = model->model;
    moas::ThreadScope threads(m.config().n_threads);
    if (moas::CudaModel *device = model->on_device())
      checked_adamw_step(
          cfg, grad_norm_out, [&] { return device->gradient_norm(); },
          [&](const moas::AdamWSettings &settings, double norm) { return device->adamw_step(settings, norm); });
    else
      checked_adamw_step(m.params, m.optimizer, cfg, grad_norm_out);
    m.parameters_changed();
  });
}

moas_status moas_optimizer_steps(const moas_model *model, uint64_t *out) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(out, "out");
    *out = model->model.optimizer.step;
  });
}

moas_status moas_parameter_count(const moas_model *model, size_t *out) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(out, "out");
    *out = model->model.params.infos().size();
  });
}

moas_status moas_parameter_info_at(const moas_model *model, size_t index, moas_parameter_info *out) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(out, "out");
    describe_parameter(model->model.params.infos(), index, out);
  });
}

moas_status moas_parameter_read(const moas_model *model, const char *name, float *out, size_t len) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(out, "out");
    const moas::ParamInfo &info = param_checked(model->model.params, name, len);
    if (model->device) model->on_device()->download_values();
    std::memcpy(out, model->model.params.value(info.offset), len * sizeof(float));
  });
}

moas_status moas_parameter_write(moas_model *model, const char *name, const float *values, size_t len) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(values, "values");
    const moas::ParamInfo &info = param_checked(model->model.params, name, len);
    require_finite(values, len, std::string("values for \"") + name + "\": values");
    if (model->device) model->on_device()->download_values();  // the mirror is uploaded whole
    std::memcpy(model->model.params.value(info.offset), values, len * sizeof(float));
    model->model.parameters_changed();
    if (model->device) model->on_device()->upload_values();
  });
}

moas_status moas_gradient_read(const moas_model *model, const char *name, float *out, size_t len) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(out, "out");
    const moas::ParamInfo &info = param_checked(model->model.params, name, len);
    if (model->device) model->on_device()->download_grads();
    std::memcpy(out, model->model.params.grads.data() + info.offset, len * sizeof(float));
  });
}

moas_status moas_gradients_read(const moas_model *model, float *out, size_t len) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(out, "out");
    require_whole_buffer(model->model.params, len, "out");
    if (model->device) model->on_device()->download_grads();
    std::memcpy(out, model->model.params.grads.data(), len * sizeof(float));
  });
}

moas_status moas_gradients_write(moas_model *model, const float *values, size_t len) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(values, "values");
    require_whole_buffer(model->model.params, len, "values");
    require_finite(values, len, "gradient values");
    std::memcpy(model->model.params.grads.data(), values, len * sizeof(float));
    if (model->device) model->on_device()->upload_grads();
  });
}

moas_status moas_model_save(const moas_model *model, const char *path, const char *user_metadata) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(path, "path");
    if (model->device) model->on_device()->download_values();
    moas::save_model(model->model, path, user_metadata);
  });
}

moas_status moas_model_load(moas_model *model, const char *path) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(path, "path");
    if (model->device) model->on_device()->download_values();  // a failed load leaves the mirror as the device has it
    moas::load_model(model->model, path);
    model->model.parameters_changed();
    if (model->device) model->on_device()->upload_values();
  });
}

moas_status moas_model_create_from_file(const char *path, const moas_model_config *overrides, moas_model **out) {
  return guarded([&] {
    require_arg(path, "path");
    require_arg(out, "out");
    *out = nullptr;
    moas::ModelConfig config = moas::read_checkpoint_config(path);
    if (overrides) {
      require_struct(overrides->struct_size, offsetof(moas_model_config, moas_mode), "moas_model_config");
      moas_model_config merged;
      merged.struct_size = sizeof merged;
      moas::to_c(config, &merged);
      merged.device = overrides->device;
      merged.device_index = overrides->device_index;
      merged.n_threads = overrides->n_threads;
      merged.seed = overrides->seed;
      if (overrides->struct_size >= offsetof(moas_model_config, reserved2))
        merged.matmul_precision = overrides->matmul_precision;
      config = moas::validate(merged);
    }
    moas::ThreadScope threads(config.n_threads);
    auto created = std::make_unique<moas_model>(config);
    moas::load_model(created->model, path);
    if (created->device) created->on_device()->upload_values();
    *out = created.release();
  });
}

moas_status moas_checkpoint_user_metadata(const char *path, char *buf, size_t buf_len, size_t *needed) {
  return guarded([&] {
    require_arg(path, "path");
    require_arg(needed, "needed");
    const std::string user = moas::read_user_metadata(path);
    *needed = user.size() + 1;
    if (!buf && buf_len == 0) return;
    require_arg(buf, "buf");
    MOAS_REQUIRE(buf_len >= user.size() + 1, MOAS_ERR_SIZE_MISMATCH,
                 "buf_len is " + std::to_string(buf_len) + " but the metadata needs " +
                 std::to_string(user.size() + 1) + " bytes");
    std::memcpy(buf, user.c_str(), user.size() + 1);
  });
}

moas_status moas_optimizer_save(const moas_model *model, const char *path) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(path, "path");
    if (model->device) model->on_device()->download_optimizer();
    moas::save_optimizer(model->model, path);
  });
}

moas_status moas_optimizer_load(moas_model *model, const char *path) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(path, "path");
    if (model->device) model->on_device()->download_optimizer();
    moas::load_optimizer(model->model, path);
    if (model->device) model->on_device()->upload_optimizer();
  });
}

moas_status moas_kv_cache_create(const moas_model *model, int32_t batch, int32_t capacity, moas_kv_cache **out) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(out, "out");
    *out = nullptr;
    const moas::ModelConfig &c = model->model.config();
    MOAS_REQUIRE(batch >= 1 && batch <= (1 << 16), MOAS_ERR_SIZE_MISMATCH,
                 "batch is " + std::to_string(batch) + ": it must be in [1, 65536]");
    MOAS_REQUIRE(capacity >= 1 && capacity <= c.block_size, MOAS_ERR_SIZE_MISMATCH,
                 "capacity is " + std::to_string(capacity) + ": it must be in [1, block_size = " +
                 std::to_string(c.block_size) + "]");
    auto created = std::make_unique<moas_kv_cache>();
    created->config = c;
    created->reads = moas::decode_reads(c);
    if (model->device) {
      created->device = std::make_unique<moas::CudaKvCache>();
      model->on_device()->allocate_cache(created->device.get(), batch, capacity);
    } else {
      model->model.allocate_cache(&created->host, batch, capacity);
    }
    *out = created.release();
  });
}

void moas_kv_cache_destroy(moas_kv_cache *cache) { delete cache; }

moas_status moas_kv_cache_reset(moas_kv_cache *cache) {
  return guarded([&] {
    require_arg(cache, "cache");
    cache->visit([](auto &kv) { kv.reset(); });
  });
}

moas_status moas_kv_cache_length(const moas_kv_cache *cache, int32_t *out) {
  return guarded([&] {
    require_arg(cache, "cache");
    require_arg(out, "out");
    *out = (int32_t)cache->visit([](const auto &kv) { return kv.length; });
  });
}

moas_status moas_kv_cache_bytes_per_token(const moas_kv_cache *cache, uint64_t *out) {
  return guarded([&] {
    require_arg(cache, "cache");
    require_arg(out, "out");
    *out = cache->visit([](const auto &kv) { return kv.bytes_per_token(); });
  });
}

moas_status moas_decode_read_bytes(const moas_kv_cache *cache, uint64_t *weight_bytes, uint64_t *cache_bytes) {
  return guarded([&] {
    require_arg(cache, "cache");
    require_arg(weight_bytes, "weight_bytes");
    require_arg(cache_bytes, "cache_bytes");
    const moas::DecodeReads &reads = cache->reads;
    const int64_t length = cache->visit([](const auto &kv) { return kv.length; });
    // The next position p sees the cached keys max(0, p - w) .. p - 1 (and its own, which it has just written).
    const int64_t seen = cache->config.window > 0 ? std::min(length, cache->config.window) : length;
    *weight_bytes = (uint64_t)(reads.weight_bytes + 0.5);
    *cache_bytes = (uint64_t)(reads.cache_bytes_per_position * (double)seen + 0.5);
  });
}

moas_status moas_prefill(moas_model *model, moas_kv_cache *cache, const int32_t *tokens, int32_t seq_len,
                         float *last_logits, size_t last_logits_len) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(cache, "cache");
    moas::Model<float> &m = model->model;
    const moas::ModelConfig &c = m.config();
    MOAS_REQUIRE(cache->config.device == c.device && (c.device == MOAS_DEVICE_CPU ||
                 cache->config.device_index == c.device_index),
                 MOAS_ERR_INVALID_ARGUMENT,
                 "the cache was made by a model on " + device_name(cache->config) + " and this model runs on " +
                 device_name(c) + ": create the cache from this model");
    const std::string diff = moas::architecture_difference(cache->config, c);
    MOAS_REQUIRE(diff.empty(), MOAS_ERR_SIZE_MISMATCH,
                 "the cache was made for another architecture (" + diff + "): create one for this model");
    const int64_t length = cache->visit([](const auto &kv) { return kv.length; });
    const int64_t capacity = cache->visit([](const auto &kv) { return kv.capacity; });
    const int32_t batch = (int32_t)cache->visit([](const auto &kv) { return kv.batch; });
    check_tokens(c, tokens, nullptr, batch, seq_len);
    MOAS_REQUIRE(length + seq_len <= capacity, MOAS_ERR_CONTEXT_FULL,
                 "the cache holds " + std::to_string(length) + " of " + std::to_string(capacity) +
                 " positions and cannot take " + std::to_string(seq_len) + " more: reset it (or create one "
                 "with a larger capacity, up to block_size)");
    const size_t V = (size_t)c.vocab_size;
    if (last_logits)
      MOAS_REQUIRE(last_logits_len == (size_t)batch * V, MOAS_ERR_SIZE_MISMATCH,
                   "last_logits_len is " + std::to_string(last_logits_len) + " but batch * vocab_size = " +
                   std::to_string((size_t)batch * V));
    moas::ThreadScope threads(c.n_threads);
    const uint64_t forwards = m.training_forwards;
    if (model->device) model->on_device()->forward(tokens, nullptr, batch, seq_len, false, cache->device.get());
    else m.forward(tokens, nullptr, batch, seq_len, false, &cache->host);
    try {
      require_finite_logits(*model, forwards);
    } catch (const moas::Error &) {
      // The positions just cached hold NaN/Inf: drop them (those before were kept in place).
      cache->visit([&](auto &kv) { kv.length = length; });
      throw;
    }
    if (model->device) {
      if (last_logits) model->on_device()->last_logits(last_logits);
    } else {
      if (last_logits)
        for (int32_t b = 0; b < batch; b++)
          std::memcpy(last_logits + b * V, m.logits().data() + ((size_t)b * seq_len + seq_len - 1) * V,
                      V * sizeof(float));
    }
  });
}

moas_status moas_decode_step(moas_model *model, moas_kv_cache *cache, const int32_t *tokens, float *logits,
                             size_t logits_len) {
  return moas_prefill(model, cache, tokens, 1, logits, logits_len);
}

moas_status moas_router_stats(const moas_model *model, int32_t layer, moas_layer_router_stats *out) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(out, "out");
    require_layer(*model, layer);
    fill_router_stats(*model, layer, out);
  });
}

moas_status moas_router_stats_all(const moas_model *model, moas_layer_router_stats *out, size_t n_layers) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(out, "out");
    const int64_t n_layer = model->model.config().n_layer;
    MOAS_REQUIRE(n_layers == (size_t)n_layer, MOAS_ERR_SIZE_MISMATCH,
                 "n_layers is " + std::to_string(n_layers) + " but the model has " + std::to_string(n_layer) +
                 " layers: pass an array of n_layer structs");
    // Filled into a copy first: a layer that fails (no router) leaves the caller's array as it was.
    std::vector<moas_layer_router_stats> stats(out, out + n_layer);
    for (int64_t l = 0; l < n_layer; l++) fill_router_stats(*model, l, &stats[(size_t)l]);
    std::copy(stats.begin(), stats.end(), out);
  });
}

moas_status moas_gates(const moas_model *model, int32_t layer, float *out, size_t out_len, int32_t *width) {
  return guarded([&] {
    require_arg(model, "model");
    require_arg(width, "width");
    require_layer(*model, layer);
    MOAS_REQUIRE(model->last_batch() > 0, MOAS_ERR_NO_FORWARD,
                 "no forward has run yet: gates come from the last moas_forward");
    int64_t w = 0;
    const std::vector<float> gates =
        model->device ? model->on_device()->gates(layer, &w) : model->model.gates(layer, &w);
    copy_gates(gates, w, out, out_len, width);
  });
}

}  // extern "C"
