// What every C entry point shares (src/api/c_api.cpp for models, src/api/c_api_layer.cpp for layers): the exception-to-
// status boundary with its per-thread message, argument checks, and the copies into versioned C structs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention/router_stats.hpp"
#include "base/error.hpp"
#include "base/finite.hpp"
#include "config/struct_size.hpp"
#include "moas.h"
#include "ops/adamw.hpp"
#include "ops/params.hpp"

namespace moas::capi {

inline thread_local std::string last_error;

template <typename F>
moas_status guarded(F &&body) {
  try {
    body();
    return MOAS_OK;
  } catch (const moas::Error &e) {
    last_error = e.what();
    return e.status();
  } catch (const std::length_error &) {  // a size past what a std::vector can hold: out of memory by another name
    last_error = "out of memory: reduce the batch, the sequence length or the model size";
    return MOAS_ERR_OUT_OF_MEMORY;
  } catch (const std::bad_alloc &) {
    last_error = "out of memory: reduce the batch, the sequence length or the model size";
    return MOAS_ERR_OUT_OF_MEMORY;
  } catch (const std::exception &e) {
    last_error = std::string("internal error: ") + e.what();
    return MOAS_ERR_INTERNAL;
  } catch (...) {
    last_error = "internal error: unknown exception";
    return MOAS_ERR_INTERNAL;
  }
}

inline void require_arg(const void *pointer, const char *name) {
  MOAS_REQUIRE(pointer != nullptr, MOAS_ERR_NULL_ARGUMENT, std::string(name) + " is NULL");
}

inline void require_struct(uint32_t struct_size, size_t v1_size, const char *type) {
  MOAS_REQUIRE(struct_size >= v1_size, MOAS_ERR_ABI_MISMATCH,
               std::string(type) + ".struct_size is " + std::to_string(struct_size) + ", expected at least " +
               std::to_string(v1_size) + ": set struct_size = sizeof(" + type + ")");
}

// The parameter `name` of a table, after checking that the caller's buffer holds exactly its len elements.
template <typename T>
const ParamInfo &param_checked(const ParamTable<T> &params, const char *name, size_t len) {
  require_arg(name, "name");
  // The LM head is tied to the token embedding, and checkpoints carry it as "lm_head.weight" too (as PyTorch's
  // state_dict does): that name reads and writes the one tensor both stand for.
  const bool head = std::strcmp(name, "lm_head.weight") == 0 && params.contains("transformer.wte.weight");
  const ParamInfo &info = params.find(head ? "transformer.wte.weight" : name);
  MOAS_REQUIRE(len == (size_t)info.numel, MOAS_ERR_SIZE_MISMATCH,
               std::string("parameter \"") + name + "\" has " + std::to_string(info.numel) + " elements but len is " +
               std::to_string(len));
  return info;
}

// The caller's length for a whole gradient buffer: every parameter, in enumeration order, which is the order of the
// flat buffer (params.hpp registers each tensor right after the previous one).
template <typename T>
void require_whole_buffer(const ParamTable<T> &params, size_t len, const char *what) {
  MOAS_REQUIRE(len == (size_t)params.total(), MOAS_ERR_SIZE_MISMATCH,
               std::string(what) + " holds " + std::to_string(len) + " floats but the parameters number " +
               std::to_string(params.total()) + " (moas_model_num_parameters / moas_layer_num_parameters)");
}

// Only a failure looks for the first bad index and builds the message.
inline void require_finite(const float *values, size_t len, const std::string &what) {
  if (all_finite(values, len)) return;
  size_t i = 0;
  while (std::isfinite(values[i])) i++;
  fail(MOAS_ERR_NON_FINITE,
       what + "[" + std::to_string(i) + "] is not finite (" + std::to_string(values[i]) + "); nothing was changed");
}

// The gates of a last forward into the caller's out (NULL: only *width), as moas_gates and moas_layer_gates promise.
inline void copy_gates(const std::vector<float> &gates, int64_t w, float *out, size_t out_len, int32_t *width) {
  *width = (int32_t)w;
  if (!out) return;
  MOAS_REQUIRE(out_len == gates.size(), MOAS_ERR_SIZE_MISMATCH,
               "out_len is " + std::to_string(out_len) + " but the last forward's gates are batch * seq_len * "
               "width = " + std::to_string(gates.size()) + " floats");
  std::memcpy(out, gates.data(), gates.size() * sizeof(float));
}

inline void describe_parameter(const std::vector<ParamInfo> &infos, size_t index, moas_parameter_info *out) {
  require_struct(out->struct_size, sizeof(moas_parameter_info), "moas_parameter_info");
  MOAS_REQUIRE(index < infos.size(), MOAS_ERR_INDEX_OUT_OF_RANGE,
               "parameter index " + std::to_string(index) + " is not below the count " + std::to_string(infos.size()));
  const ParamInfo &info = infos[index];
  out->ndim = (int32_t)info.shape.size();
  out->name = info.name.c_str();
  for (int i = 0; i < MOAS_MAX_DIMS; i++) out->shape[i] = i < out->ndim ? info.shape[(size_t)i] : 0;
  out->numel = (uint64_t)info.numel;
}

// The size of moas_layer_router_stats in libmoas 0.1.0; later fields are written only when the caller's struct
// reaches them.
constexpr size_t kRouterStatsV1Size = offsetof(moas_layer_router_stats, top_share);

inline void copy_router_stats(const RouterStats &st, moas_layer_router_stats *out) {
  require_struct(out->struct_size, kRouterStatsV1Size, "moas_layer_router_stats");
  moas_layer_router_stats full;
  std::memset(&full, 0, sizeof full);
  full.n_routes = (int32_t)st.share.size();
  for (size_t i = 0; i < st.share.size(); i++) {
    full.share[i] = (float)st.share[i];
    full.mean_gate[i] = (float)st.mean_gate[i];
    full.top_share[i] = (float)st.top_share[i];
  }
  full.balance = (float)st.balance();
  full.max_over_mean = (float)st.max_over_mean();
  full.collapsed = st.collapsed() ? 1 : 0;
  full.entropy = (float)st.entropy;
  full.aux_loss = (float)st.aux_loss;
  full.mean_shared_weight = (float)st.mean_shared_weight;
  full.mean_routed_weight = (float)st.mean_routed_weight;
  full.attention = st.attention;
  write_known_fields(out, full);
}

// RustGPT's Adam (moas_adamw_config_rustgpt) and the AdamW default (moas_adamw_config_default).
constexpr uint32_t kAdamWSize = sizeof(moas_adamw_config);
inline moas_adamw_config adam_rustgpt() { return {kAdamWSize, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0.0f}; }
inline moas_adamw_config adamw_default() { return {kAdamWSize, 1e-3f, 0.9f, 0.99f, 1e-8f, 0.1f, 1.0f}; }

inline AdamWSettings check_adamw(const moas_adamw_config &cfg) {
  // AdamW moves each weight by about lr a step: past 1 a single step rewrites any trained weight wholesale.
  MOAS_REQUIRE(cfg.lr >= 0 && cfg.lr <= 1, MOAS_ERR_INVALID_CONFIG,
               "lr is " + std::to_string(cfg.lr) + ": it must be in [0, 1]");
  MOAS_REQUIRE(cfg.beta1 >= 0 && cfg.beta1 < 1, MOAS_ERR_INVALID_CONFIG,
               "beta1 is " + std::to_string(cfg.beta1) + ": it must be in [0, 1)");
  MOAS_REQUIRE(cfg.beta2 >= 0 && cfg.beta2 < 1, MOAS_ERR_INVALID_CONFIG,
               "beta2 is " + std::to_string(cfg.beta2) + ": it must be in [0, 1)");
  MOAS_REQUIRE(std::isfinite(cfg.eps) && cfg.eps > 0, MOAS_ERR_INVALID_CONFIG,
               "eps is " + std::to_string(cfg.eps) + ": it must be > 0");
  // Decay multiplies each weight by 1 - lr * weight_decay: beyond 1 it would flip signs.
  MOAS_REQUIRE(cfg.weight_decay >= 0 && cfg.lr * cfg.weight_decay <= 1, MOAS_ERR_INVALID_CONFIG,
               "weight_decay is " + std::to_string(cfg.weight_decay) + " with lr " + std::to_string(cfg.lr) +
               ": it must be >= 0 with lr * weight_decay <= 1");
  MOAS_REQUIRE(std::isfinite(cfg.grad_clip) && cfg.grad_clip >= 0, MOAS_ERR_INVALID_CONFIG,
               "grad_clip is " + std::to_string(cfg.grad_clip) + ": use 0 (off) or a positive norm");
  return {cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, cfg.grad_clip};
}

// One AdamW step after the checks every optimiser call makes: norm() gives the gradients' L2 norm, step(settings,
// norm) applies the step unless its result would not be finite (it returns false then, having changed nothing). A
// non-finite norm or result skips the step and leaves the weights and moments unchanged (MOAS_ERR_NON_FINITE);
// grad_norm_out (nullable) gets the norm either way.
template <class Norm, class Step>
void checked_adamw_step(const moas_adamw_config *cfg, float *grad_norm_out, Norm &&norm_of, Step &&step) {
  require_arg(cfg, "cfg");
  require_struct(cfg->struct_size, sizeof(moas_adamw_config), "moas_adamw_config");
  const AdamWSettings settings = check_adamw(*cfg);
  const double norm = norm_of();
  if (grad_norm_out) *grad_norm_out = (float)norm;
  MOAS_REQUIRE(std::isfinite(norm), MOAS_ERR_NON_FINITE,
               "the gradient norm is not finite: the step was skipped and the weights are unchanged; "
               "zero the gradients and lower the learning rate or check the inputs");
  MOAS_REQUIRE(step(settings, norm), MOAS_ERR_NON_FINITE,
               "this step would leave a weight or an AdamW moment non-finite (a gradient holds NaN/Inf or one so "
               "large that its square overflows, or the moments loaded do not belong together): the step was "
               "skipped and nothing changed; zero the gradients, clip them (grad_clip) or lower the learning rate");
}

// The same on the CPU, over a parameter table and its optimiser state. The norm is computed only when clipping or
// the caller needs it: the finiteness check before the step also catches non-finite gradients (its "norm" is then 0,
// which clipping off never reads). That check bounds the result from the buffers' maxima and computes the step
// without writing it only when the bounds cannot prove it finite.
inline void checked_adamw_step(ParamTable<float> &params, AdamWState<float> &state, const moas_adamw_config *cfg,
                               float *grad_norm_out) {
  checked_adamw_step(
      cfg, grad_norm_out,
      [&] { return cfg->grad_clip > 0 || grad_norm_out ? gradient_norm(params.grads) : 0.0; },
      [&](const AdamWSettings &settings, double norm) {
        if (!adamw_step_surely_finite<float>(adamw_maxima(params, state), settings, state.step + 1, norm) &&
            !adamw_step_stays_finite(params, state, settings, norm))
          return false;
        adamw_step(params, state, settings, norm);
        return true;
      });
}

}  // namespace moas::capi
