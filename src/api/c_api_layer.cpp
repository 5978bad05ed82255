// The C ABI of the attention layer (moas_layer_*): argument checks complete before the layer is touched, so a
// failed call leaves it as it was.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "api/c_api_support.hpp"
#include "base/parallel.hpp"
#include "checkpoint/checkpoint.hpp"
#include "config/layer_config.hpp"
#include "cuda_host/cuda_layer.hpp"
#include "cuda_host/cuda_loader.hpp"
#include "moas.h"
#include "model/layer.hpp"

struct moas_layer {
  moas_layer(const moas::ModelConfig &config, bool residual) : layer(config, residual) {
    if (config.device == MOAS_DEVICE_CUDA)
      device = std::make_unique<moas::CudaLayer>(*moas::cuda_backend().table, config.device_index, layer);
  }
  // The layer on the CPU; with device = MOAS_DEVICE_CUDA, the host mirror of `device`, which runs it (cuda_layer.hpp):
  // reads of weights and gradients download into the mirror first, writes upload after.
  moas::AttentionLayer<float> layer;
  std::unique_ptr<moas::CudaLayer> device;

  // The CUDA layer (null on the CPU), its device made current for the calling thread.
  moas::CudaLayer *on_device() const {
    if (device) device->use_device();
    return device.get();
  }
  int64_t last_tokens() const { return device ? device->last_tokens() : layer.last_tokens(); }
  bool can_backward() const { return device ? device->can_backward() : layer.can_backward(); }
};

namespace {

using namespace moas::capi;

// The shape of one forward's activations, checked against the layer and the caller's length.
void check_activations(const moas::AttentionLayer<float> &l, size_t len, int32_t batch, int32_t seq_len) {
  const moas::ModelConfig &c = l.config();
  MOAS_REQUIRE(batch >= 1 && seq_len >= 1, MOAS_ERR_SIZE_MISMATCH,
               "batch (" + std::to_string(batch) + ") and seq_len (" + std::to_string(seq_len) + ") must be >= 1");
  MOAS_REQUIRE(seq_len <= c.block_size, MOAS_ERR_CONTEXT_TOO_LONG,
               "seq_len " + std::to_string(seq_len) + " exceeds the layer's max_seq_len " +
               std::to_string(c.block_size) + ": create the layer with a larger max_seq_len");
  const int64_t tokens = (int64_t)batch * seq_len;
  MOAS_REQUIRE(tokens <= (int64_t)1 << 24, MOAS_ERR_SIZE_MISMATCH,
               "batch * seq_len = " + std::to_string(tokens) + " tokens is more than 2^24 per call: split the batch");
  const uint64_t expected = (uint64_t)tokens * (uint64_t)c.n_embd;
  MOAS_REQUIRE(len == expected, MOAS_ERR_SIZE_MISMATCH,
               "len is " + std::to_string(len) + " but batch * seq_len * n_embd = " + std::to_string(batch) + " * " +
               std::to_string(seq_len) + " * " + std::to_string(c.n_embd) + " = " + std::to_string(expected));
}

// In place (a == b) is fine; any other overlap would read values the call already overwrote.
void require_same_or_disjoint(const float *a, const float *b, size_t len, const char *names) {
  const bool disjoint = a + len <= b || b + len <= a;
  MOAS_REQUIRE(a == b || disjoint, MOAS_ERR_INVALID_ARGUMENT,
               std::string(names) + " overlap without being the same buffer: pass the same pointer (in place) or "
               "separate buffers");
}

const moas::AttentionLayer<float> &layer_of(const moas_layer *layer) {
  require_arg(layer, "layer");
  return layer->layer;
}

}  // namespace

extern "C" {

moas_status moas_layer_config_default(moas_layer_config *cfg) {
  return guarded([&] {
    require_arg(cfg, "cfg");
    require_struct(cfg->struct_size, sizeof(uint32_t), "moas_layer_config");
    moas::fill_layer_default(cfg);
  });
}

moas_status moas_layer_create(const moas_layer_config *cfg, moas_layer **out) {
  return guarded([&] {
    require_arg(cfg, "cfg");
    require_arg(out, "out");
    *out = nullptr;
    require_struct(cfg->struct_size, moas::kLayerConfigV1Size, "moas_layer_config");
    const moas::ModelConfig config = moas::validate_layer(*cfg);
    moas::ThreadScope threads(config.n_threads);
    *out = new moas_layer(config, cfg->residual == 1);
  });
}

void moas_layer_destroy(moas_layer *layer) { delete layer; }

moas_status moas_layer_get_config(const moas_layer *layer, moas_layer_config *out) {
  return guarded([&] {
    const moas::AttentionLayer<float> &l = layer_of(layer);
    require_arg(out, "out");
    require_struct(out->struct_size, moas::kLayerConfigV1Size, "moas_layer_config");
    moas::to_layer_c(l.config(), l.residual(), out);
  });
}

moas_status moas_layer_forward(moas_layer *layer, const float *x, float *y, size_t len, int32_t batch,
                               int32_t seq_len, int32_t training, float *aux_out) {
  return guarded([&] {
    require_arg(layer, "layer");
    require_arg(x, "x");
    require_arg(y, "y");
    moas::AttentionLayer<float> &l = layer->layer;
    check_activations(l, len, batch, seq_len);
    MOAS_REQUIRE(training == 0 || training == 1, MOAS_ERR_INVALID_CONFIG,
                 "training is " + std::to_string(training) + ": use 0 (eval) or 1 (training)");
    require_same_or_disjoint(x, y, len, "x and y");
    require_finite(x, len, "x");
    moas::ThreadScope threads(l.config().n_threads);
    const bool finite = layer->device ? layer->on_device()->forward(x, y, batch, seq_len, training == 1)
                                      : l.forward(x, y, batch, seq_len, training == 1);
    MOAS_REQUIRE(finite, MOAS_ERR_NON_FINITE,
                 "the layer's output holds NaN/Inf (y was left as it was): its weights are too large or diverged, or "
                 "x is too large; reload a checkpoint or lower the learning rate");
    const double aux = layer->device ? layer->on_device()->aux_loss() : l.aux_loss();
    if (aux_out) *aux_out = training == 1 ? (float)aux : 0.0f;
  });
}

moas_status moas_layer_backward(moas_layer *layer, const float *dy, float *dx, size_t len) {
  return guarded([&] {
    require_arg(layer, "layer");
    require_arg(dy, "dy");
    require_arg(dx, "dx");
    moas::AttentionLayer<float> &l = layer->layer;
    MOAS_REQUIRE(layer->can_backward(), MOAS_ERR_NO_FORWARD,
                 "moas_layer_backward needs a preceding moas_layer_forward with training = 1 (and no backward, "
                 "parameter write or optimiser step since)");
    const size_t expected = (size_t)layer->last_tokens() * (size_t)l.config().n_embd;
    MOAS_REQUIRE(len == expected, MOAS_ERR_SIZE_MISMATCH,
                 "len is " + std::to_string(len) + " but the last forward's activations hold " +
                 std::to_string(expected) + " floats");
    require_same_or_disjoint(dy, dx, len, "dy and dx");
    require_finite(dy, len, "dy");
    moas::ThreadScope threads(l.config().n_threads);
    if (layer->device) layer->on_device()->backward(dy, dx);
    else l.backward(dy, dx);
  });
}

moas_status moas_layer_zero_grad(moas_layer *layer) {
  return guarded([&] {
    require_arg(layer, "layer");
    std::fill(layer->layer.params.grads.begin(), layer->layer.params.grads.end(), 0.0f);
    if (layer->device) layer->on_device()->parameters().zero_grads();
  });
}

moas_status moas_layer_optimizer_step(moas_layer *layer, const moas_adamw_config *cfg, float *grad_norm_out) {
  return guarded([&] {
    require_arg(layer, "layer");
    moas::AttentionLayer<float> &l = layer->layer;
    moas::ThreadScope threads(l.config().n_threads);
    if (moas::CudaLayer *device = layer->on_device()) {
      checked_adamw_step(
          cfg, grad_norm_out, [&] { return device->parameters().gradient_norm(); },
          [&](const moas::AdamWSettings &settings, double norm) {
            if (!device->parameters().adamw_step(settings, l.optimizer.step + 1, norm)) return false;
            l.optimizer.step++;
            return true;
          });
      device->invalidate_activations();
    } else {
      checked_adamw_step(l.params, l.optimizer, cfg, grad_norm_out);
    }
    l.invalidate_activations();
  });
}

moas_status moas_layer_parameter_count(const moas_layer *layer, size_t *out) {
  return guarded([&] {
    const moas::AttentionLayer<float> &l = layer_of(layer);
    require_arg(out, "out");
    *out = l.params.infos().size();
  });
}

moas_status moas_layer_parameter_info_at(const moas_layer *layer, size_t index, moas_parameter_info *out) {
  return guarded([&] {
    const moas::AttentionLayer<float> &l = layer_of(layer);
    require_arg(out, "out");
    describe_parameter(l.params.infos(), index, out);
  });
}

moas_status moas_layer_parameter_read(const moas_layer *layer, const char *name, float *out, size_t len) {
  return guarded([&] {
    const moas::AttentionLayer<float> &l = layer_of(layer);
    require_arg(out, "out");
    const moas::ParamInfo &info = param_checked(l.params, name, len);
    if (layer->device) layer->on_device()->download_values();
    std::memcpy(out, l.params.value(info.offset), len * sizeof(float));
  });
}

moas_status moas_layer_parameter_write(moas_layer *layer, const char *name, const float *values, size_t len) {
  return guarded([&] {
    require_arg(layer, "layer");
    require_arg(values, "values");
    moas::AttentionLayer<float> &l = layer->layer;
    const moas::ParamInfo &info = param_checked(l.params, name, len);
    require_finite(values, len, std::string("values for \"") + name + "\": values");
    if (layer->device) layer->on_device()->download_values();  // the mirror is uploaded whole
    std::memcpy(l.params.value(info.offset), values, len * sizeof(float));
    l.invalidate_activations();
    if (layer->device) layer->on_device()->upload_values();
  });
}

moas_status moas_layer_gradient_read(const moas_layer *layer, const char *name, float *out, size_t len) {
  return guarded([&] {
    const moas::AttentionLayer<float> &l = layer_of(layer);
    require_arg(out, "out");
    const moas::ParamInfo &info = param_checked(l.params, name, len);
    if (layer->device) layer->on_device()->download_grads();
    std::memcpy(out, l.params.grads.data() + info.offset, len * sizeof(float));
  });
}

moas_status moas_layer_gradient_write(moas_layer *layer, const char *name, const float *values, size_t len) {
  return guarded([&] {
    require_arg(layer, "layer");
    require_arg(values, "values");
    moas::AttentionLayer<float> &l = layer->layer;
    const moas::ParamInfo &info = param_checked(l.params, name, len);
    require_finite(values, len, std::string("gradient values for \"") + name + "\": values");
    if (layer->device) layer->on_device()->download_grads();
    std::memcpy(l.params.grads.data() + info.offset, values, len * sizeof(float));
    if (layer->device) layer->on_device()->upload_grads();
  });
}

moas_status moas_layer_num_parameters(const moas_layer *layer, uint64_t *out) {
  return guarded([&] {
    const moas::AttentionLayer<float> &l = layer_of(layer);
    require_arg(out, "out");
    *out = (uint64_t)l.params.total();
  });
}

moas_status moas_layer_gradients_read(const moas_layer *layer, float *out, size_t len) {
  return guarded([&] {
    const moas::AttentionLayer<float> &l = layer_of(layer);
    require_arg(out, "out");
    require_whole_buffer(l.params, len, "out");
    if (layer->device) layer->on_device()->download_grads();
    std::memcpy(out, l.params.grads.data(), len * sizeof(float));
  });
}

moas_status moas_layer_gradients_write(moas_layer *layer, const float *values, size_t len) {
  return guarded([&] {
    require_arg(layer, "layer");
    require_arg(values, "values");
    moas::AttentionLayer<float> &l = layer->layer;
    require_whole_buffer(l.params, len, "values");
    require_finite(values, len, "gradient values");
    std::memcpy(l.params.grads.data(), values, len * sizeof(float));
    if (layer->device) layer->on_device()->upload_grads();
  });
}

moas_status moas_layer_save(const moas_layer *layer, const char *path, const char *user_metadata) {
  return guarded([&] {
    const moas::AttentionLayer<float> &l = layer_of(layer);
    require_arg(path, "path");
    if (layer->device) layer->on_device()->download_values();
    moas::save_layer(l, path, user_metadata);
  });
}

moas_status moas_layer_load(moas_layer *layer, const char *path) {
  return guarded([&] {
    require_arg(layer, "layer");
    require_arg(path, "path");
    moas::AttentionLayer<float> &l = layer->layer;
    if (layer->device) layer->on_device()->download_values();  // a failed load leaves the mirror as the device
    moas::load_layer(l, path);
    l.invalidate_activations();
    if (layer->device) layer->on_device()->upload_values();
  });
}

moas_status moas_layer_create_from_file(const char *path, const moas_layer_config *overrides, moas_layer **out) {
  return guarded([&] {
    require_arg(path, "path");
    require_arg(out, "out");
    *out = nullptr;
    moas::LayerCheckpointConfig stored = moas::read_layer_checkpoint_config(path);
    if (overrides) {
      require_struct(overrides->struct_size, moas::kLayerConfigV1Size, "moas_layer_config");
      moas_model_config merged;
      merged.struct_size = sizeof merged;
      moas::to_c(stored.config, &merged);
      merged.device = overrides->device;
      merged.device_index = overrides->device_index;
      merged.n_threads = overrides->n_threads;
      if (overrides->struct_size >= offsetof(moas_layer_config, reserved0))
        merged.matmul_precision = overrides->matmul_precision;
      stored.config = moas::validate(merged);
    }
    moas::ThreadScope threads(stored.config.n_threads);
    auto created = std::make_unique<moas_layer>(stored.config, stored.residual);
    moas::load_layer(created->layer, path);
    if (created->device) created->on_device()->upload_values();
    *out = created.release();
  });
}

moas_status moas_layer_optimizer_save(const moas_layer *layer, const char *path) {
  return guarded([&] {
    const moas::AttentionLayer<float> &l = layer_of(layer);
    require_arg(path, "path");
    if (layer->device) layer->on_device()->download_optimizer();
    moas::save_layer_optimizer(l, path);
  });
}

moas_status moas_layer_optimizer_load(moas_layer *layer, const char *path) {
  return guarded([&] {
    require_arg(layer, "layer");
    require_arg(path, "path");
    if (layer->device) layer->on_device()->download_optimizer();  // a failed load leaves the mirror as the device
    moas::load_layer_optimizer(layer->layer, path);
    if (layer->device) layer->on_device()->upload_optimizer();
  });
}

moas_status moas_layer_optimizer_steps(const moas_layer *layer, uint64_t *out) {
  return guarded([&] {
    const moas::AttentionLayer<float> &l = layer_of(layer);
    require_arg(out, "out");
    *out = l.optimizer.step;
  });
}

moas_status moas_layer_get_router_stats(const moas_layer *layer, moas_layer_router_stats *out) {
  return guarded([&] {
    const moas::AttentionLayer<float> &l = layer_of(layer);
    require_arg(out, "out");
    require_struct(out->struct_size, kRouterStatsV1Size, "moas_layer_router_stats");
    MOAS_REQUIRE(layer->last_tokens() > 0, MOAS_ERR_NO_FORWARD,
                 "no forward has run yet: router statistics come from the last moas_layer_forward");
    moas::RouterStats st;
    MOAS_REQUIRE(layer->device ? layer->on_device()->router_stats(&st) : l.router_stats(&st), MOAS_ERR_NO_ROUTER,
                 "this layer has no router: one attention scheme, or MoH AllHeads / StaticPruning");
    copy_router_stats(st, out);
  });
}

moas_status moas_layer_gates(const moas_layer *layer, float *out, size_t out_len, int32_t *width) {
  return guarded([&] {
    const moas::AttentionLayer<float> &l = layer_of(layer);
    require_arg(width, "width");
    MOAS_REQUIRE(layer->last_tokens() > 0, MOAS_ERR_NO_FORWARD,
                 "no forward has run yet: gates come from the last moas_layer_forward");
    int64_t w = 0;
    const std::vector<float> gates = layer->device ? layer->on_device()->gates(&w) : l.gates(&w);
    copy_gates(gates, w, out, out_len, width);
  });
}

}  // extern "C"
