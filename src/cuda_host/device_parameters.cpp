#include "cuda_host/device_parameters.hpp"

#include <cmath>
#include <vector>

namespace moas {

DeviceParameters::DeviceParameters(const moas_cuda_backend &t, const ParamTable<float> &params,
                                   const AdamWState<float> &state)
    : t_(&t), n_(params.total()), n_segments_((int64_t)params.infos().size()) {
  values_.upload(t, params.values.data(), n_);
  grads_.reserve(t, n_);
  grads_.zero(n_);
  upload_optimizer(state);
  const ParamSegments segments = param_segments(params);
  segment_begin_.upload(t, segments.begin.data(), (int64_t)segments.begin.size());
  segment_decay_.upload(t, segments.decay.data(), n_segments_);
}

double DeviceParameters::norm_of(const float *p, int64_t n) {
  norm_.reserve(*t_, 1);
  norm_partials_.reserve(*t_, moas_cuda_gradient_norm_scratch(n));
  device_check(*t_, t_->gradient_norm(norm_.get(), norm_partials_.get(), p, n, nullptr), "gradient_norm");
  double norm = 0;
  norm_.download(&norm, 1);
  return norm;
}

bool DeviceParameters::adamw_step(const AdamWSettings &s, uint64_t step, double grad_norm) {
  // An L2 norm bounds a buffer's largest magnitude, so the CPU's cheap proof (adamw_step_surely_finite) holds with
  // norms in place of maxima; only a step it cannot vouch for runs on a copy kept to undo it.
  const AdamWMaxima bounds{grad_norm, norm_of(values_.get(), n_), norm_of(exp_avg_.get(), n_),
                           norm_of(exp_avg_sq_.get(), n_)};
  const bool sure = adamw_step_surely_finite<float>(bounds, s, step, grad_norm);
  float *state[3] = {values_.get(), exp_avg_.get(), exp_avg_sq_.get()};
  const size_t bytes = (size_t)n_ * sizeof(float);
  if (!sure) {
    before_step_.reserve(*t_, 3 * n_);
    for (int k = 0; k < 3 && n_ > 0; k++)
      device_check(*t_, t_->copy(before_step_.get() + k * n_, state[k], bytes, nullptr), "copy on the device");
  }
  const moas_cuda_adamw_settings settings{s.lr, s.beta1, s.beta2, s.eps, s.weight_decay, s.grad_clip};
  device_check(*t_,
               t_->adamw_step(&settings, step, grad_norm, values_.get(), grads_.get(), exp_avg_.get(),
                              exp_avg_sq_.get(), n_, segment_begin_.get(), segment_decay_.get(), n_segments_, nullptr),
               "adamw_step");
  device_check(*t_, t_->synchronize(nullptr), "adamw_step");
  if (sure ||
      std::isfinite(norm_of(values_.get(), n_) + norm_of(exp_avg_.get(), n_) + norm_of(exp_avg_sq_.get(), n_)))
    return true;
  for (int k = 0; k < 3 && n_ > 0; k++)
    device_check(*t_, t_->copy(state[k], before_step_.get() + k * n_, bytes, nullptr), "copy on the device");
  return false;
}

void DeviceParameters::download_optimizer(AdamWState<float> &state) const {
  state.exp_avg.resize((size_t)n_);
  state.exp_avg_sq.resize((size_t)n_);
  exp_avg_.download(state.exp_avg.data(), n_);
  exp_avg_sq_.download(state.exp_avg_sq.data(), n_);
}

// The state's moments when it has them (a loaded optimiser state), else zeros, as the CPU's first step starts.
void DeviceParameters::upload_optimizer(const AdamWState<float> &state) {
  exp_avg_.reserve(*t_, n_);
  exp_avg_sq_.reserve(*t_, n_);
  if ((int64_t)state.exp_avg.size() == n_) {
    exp_avg_.upload(*t_, state.exp_avg.data(), n_);
    exp_avg_sq_.upload(*t_, state.exp_avg_sq.data(), n_);
  } else {
    exp_avg_.zero(n_);
    exp_avg_sq_.zero(n_);
  }
}

}  // namespace moas
