// attention_options.hpp on the device: a block's SPEC §7 options — its sliding window and CoPE table — and the
// kernel they call for (the tiled one, or CoPE's, whose backward also accumulates the table's gradient). Every CUDA
// block kind attends through here, as every CPU block attends through attend_forward / attend_backward.
#pragma once

#include <cstdint>
#include <string>

#include "config/config.hpp"
#include "cuda_host/cuda_backend.h"
#include "cuda_host/device_array.hpp"
#include "ops/params.hpp"

namespace moas {

class CudaAttend {
 public:
  // The window of `config` and, with CoPE, the offset of `prefix` + "cope.weight" [H, P, d].
  CudaAttend(const ModelConfig &config, const ParamTable<float> &params, const std::string &prefix)
      : window_(config.window),
        cope_max_pos_(config.cope_max_pos),
        cope_(params.offset_if_present(prefix + "cope.weight")) {}

  // dims without the window: the options supply it.
  void forward(const moas_cuda_backend &t, const float *values, moas_cuda_attention_dims dims,
               const moas_cuda_key_values &kv, const moas_cuda_query_head *heads, int64_t n_heads,
               const moas_cuda_dropout &drop) const {
    dims.window = window_;
    if (cope_ < 0) {
      device_check(t, t.attention_forward(&dims, &kv, heads, n_heads, &drop, nullptr), "attention_forward");
      return;
    }
    device_check(t, t.cope_attention_forward(&dims, &kv, heads, n_heads, values + cope_, cope_max_pos_, &drop, nullptr),
                 "cope_attention_forward");
  }

  void backward(const moas_cuda_backend &t, const float *values, float *grads, moas_cuda_attention_dims dims,
                const moas_cuda_key_values &kv, const moas_cuda_query_head *heads,
                const moas_cuda_query_head_grad *head_grads, int64_t n_heads, const moas_cuda_key_value_grads &dkv,
                const moas_cuda_dropout &drop) {
    dims.window = window_;
    if (cope_ < 0) {
      device_check(t, t.attention_backward(&dims, &kv, heads, head_grads, n_heads, &dkv, &drop, nullptr),
                   "attention_backward");
      return;
    }
    scratch_.reserve(t, dims.batch * dims.heads * cope_max_pos_ * dims.head_dim);
    device_check(t,
                 t.cope_attention_backward(&dims, &kv, heads, head_grads, n_heads, &dkv, values + cope_, cope_max_pos_,
                                           grads + cope_, scratch_.get(), &drop, nullptr),
                 "cope_attention_backward");
  }

 private:
  int64_t window_, cope_max_pos_;
  int64_t cope_;                  // offset of the CoPE table; -1 without CoPE
  DeviceArray<float> scratch_;    // CoPE backward's per-sequence partial sums
};

}  // namespace moas
