// A parameter table's values, gradients and AdamW moments in device memory, and the optimiser step over them: what a
// CUDA model and a CUDA layer share. The host ParamTable / AdamWState it was made from stays the mirror that reads,
// writes and checkpoints go through (download / upload).
#pragma once

#include <cstdint>

#include "cuda_host/cuda_backend.h"
#include "cuda_host/device_array.hpp"
#include "ops/adamw.hpp"
#include "ops/params.hpp"

namespace moas {

class DeviceParameters {
 public:
  // Uploads the values; gradients start at zero, moments from `state` when it has them (else zero).
  DeviceParameters(const moas_cuda_backend &t, const ParamTable<float> &params, const AdamWState<float> &state);

  float *values() const { return values_.get(); }
  float *grads() const { return grads_.get(); }

  void zero_grads() { grads_.zero(n_); }
  // adamw.hpp's gradient_norm of the device gradients.
  double gradient_norm() { return norm_of(grads_.get(), n_); }
  // The L2 norm of n device floats, summed in double: non-finite exactly when one of them is.
  double norm_of(const float *p, int64_t n);
  // One AdamW step numbered `step` (1 for the first) with the pre-clip norm the caller checked is finite. A step that
  // leaves a value or a moment non-finite is undone from a device copy taken before it (taken only when the norms
  // cannot prove the step finite), and false is returned.
  bool adamw_step(const AdamWSettings &settings, uint64_t step, double grad_norm);

  void download_values(ParamTable<float> &params) const { values_.download(params.values.data(), n_); }
  void download_grads(ParamTable<float> &params) const { grads_.download(params.grads.data(), n_); }
  void upload_values(const ParamTable<float> &params) { values_.upload(*t_, params.values.data(), n_); }
  void upload_grads(const ParamTable<float> &params) { grads_.upload(*t_, params.grads.data(), n_); }
  void download_optimizer(AdamWState<float> &state) const;
  void upload_optimizer(const AdamWState<float> &state);

 private:
  const moas_cuda_backend *t_;
  int64_t n_, n_segments_;
  DeviceArray<float> values_, grads_, exp_avg_, exp_avg_sq_;
  DeviceArray<float> before_step_;  // values, exp_avg and exp_avg_sq as they were before the current step
  DeviceArray<int64_t> segment_begin_;  // AdamW's segments: one per tensor
  DeviceArray<uint8_t> segment_decay_;  // decaying when its rank is >= 2 (ParamInfo::decay)
  DeviceArray<double> norm_, norm_partials_;
};

}  // namespace moas
