// exp and erf written so that loops over them vectorise (glibc's expf/erff are scalar calls unless -ffast-math).
// float: Cephes-style exp (≈1 ulp) and Abramowitz–Stegun 7.1.26 erf (|error| < 1.5e-7, below float resolution of
// 1 + erf). double (the finite-difference build) uses the exact library functions. Both are MOAS_HD: the CUDA
// kernels evaluate the same polynomials as the CPU (the softmaxes call fast_exp, GELU fast_erf).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "base/hd.hpp"

namespace moas {

// The bits of a float and back (memcpy on the host, the intrinsics on the device).
MOAS_HD inline uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
#endif
}

MOAS_HD inline float float_from_bits(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
#endif
}

MOAS_HD inline float fast_exp(float x) {
  // exp(x) = 2^n * exp(r), n = round(x / ln2), |r| <= ln2 / 2, with ln2 split in two so n * ln2 is exact.
  // Adding 1.5 * 2^23 rounds to an integer that lands in the mantissa's low bits: no float-to-int conversion,
  // so a NaN input flows through as NaN instead of being undefined behaviour.
  // min(max(x, -87), 88) as std::min/std::max evaluate it (a NaN passes through), written out for the device.
  const float above = x < -87.0f ? -87.0f : x;
  const float clamped = 88.0f < above ? 88.0f : above;
  const float magic = 12582912.0f;
  const float t = clamped * 1.44269504088896341f + magic;
  const float n = t - magic;
  const float r = clamped - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  const uint32_t exponent = (float_bits(t) - 0x4B400000u + 127u) << 23;  // 0x4B400000: the bits of `magic`
  return x < -87.0f ? 0.0f : er * float_from_bits(exponent);
}

MOAS_HD inline double fast_exp(double x) { return std::exp(x); }

MOAS_HD inline float fast_erf(float x) {
  const float ax = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.3275911f * ax);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float y = 1.0f - p * t * fast_exp(-ax * ax);
  return x < 0.0f ? -y : y;
}

MOAS_HD inline double fast_erf(double x) { return std::erf(x); }

}  // namespace moas
