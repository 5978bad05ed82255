// Central finite differences in double (SPEC §9: eps 1e-6, atol 1e-5, rtol 1e-3) and small tensor helpers.
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "ops/init.hpp"

namespace moas_test {

inline std::vector<double> random_vector(size_t n, uint64_t seed, double scale = 1.0) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; i++) v[i] = scale * moas::normal_sample(seed, 7, i);
  return v;
}

inline double dot(const std::vector<double> &a, const std::vector<double> &b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}

// Compares analytic[i] with the central difference of loss() in x[i] for up to max_checks indices spread over x.
// A piecewise smooth loss (CoPE interpolates between integer positions) also gets its second difference checked, so
// that a kink between the two evaluations fails as such rather than as a wrong gradient: a slope change s at distance
// t inside the step makes it s (eps - t), and the central difference errs by that over 2 eps; a smooth loss's is
// eps^2 f'' (at most 2e-11 in the tiny test models). The bound flags every kink that moves the difference by more
// than 5e-4.
template <class Loss>
void check_gradient(const std::string &what, double *x, size_t n, const double *analytic, Loss &&loss,
                    size_t max_checks = 48, bool piecewise = false) {
  const double eps = 1e-6, atol = 1e-5, rtol = 1e-3, kink = 1e-9;
  const size_t stride = n > max_checks ? n / max_checks : 1;
  const double center = piecewise ? loss() : 0.0;
  double worst = 0;
  for (size_t i = 0; i < n; i += stride) {
    const double saved = x[i];
    x[i] = saved + eps;
    const double plus = loss();
    x[i] = saved - eps;
    const double minus = loss();
    x[i] = saved;
    if (piecewise) {
      INFO(what << "[" << i << "]: a kink (a position crossing an integer) lies within the step");
      REQUIRE(std::fabs(plus - 2 * center + minus) <= kink);
    }
    const double numeric = (plus - minus) / (2 * eps);
    const double err = std::fabs(numeric - analytic[i]);
    worst = std::max(worst, err);
    INFO(what << "[" << i << "]: analytic " << analytic[i] << " numeric " << numeric);
    REQUIRE(err <= atol + rtol * std::fabs(numeric));
  }
  INFO(what << ": worst abs error " << worst);
  SUCCEED();
}

// max|a - b| <= tol * max|b| (SPEC §9).
template <typename A, typename B>
bool close(const std::vector<A> &a, const std::vector<B> &b, double tol) {
  if (a.size() != b.size()) return false;
  double scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); i++) {
    scale = std::max(scale, std::fabs((double)b[i]));
    diff = std::max(diff, std::fabs((double)a[i] - (double)b[i]));
  }
  return diff <= tol * scale;
}

}  // namespace moas_test
