// The CUDA backend's function table (src/cuda_host/cuda_backend.h) filled with the CPU backend's functions: "device" memory is
// host memory and every entry calls the CPU function its comment in cuda_backend.h names. It lets the tests run the
// CUDA model's orchestration (src/cuda_host/cuda_model.cpp) — which buffers, which steps, in which order — where no GPU exists,
// and compare it step for step with Model<float>: both then compute with the same functions, so they must agree bit
// for bit. (The kernels themselves are checked against the same CPU functions by the host-emulation tests.)
//
// Built twice: into the test executables, and as libmoas_cuda_cpu.so exporting moas_cuda_backend_v<N>, which the
// C API tests load through MOAS_CUDA_LIBRARY to drive device = CUDA end to end.
#pragma once

#include <cstdint>
#include <cstring>

#include "cuda_host/cuda_backend.h"

namespace moas_test {

// x rounded to nearest (ties to even) with `kept` of its 23 mantissa bits: TF32 keeps 10, bfloat16 7. Infinities and
// NaNs pass unchanged; a carry out of the mantissa rounds up into the exponent, as it should.
inline float round_mantissa(float x, int kept) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  const int dropped = 23 - kept;
  const uint32_t lowest_kept = (u >> dropped) & 1u;
  u += (1u << (dropped - 1)) - 1u + lowest_kept;
  u &= ~((1u << dropped) - 1u);
  std::memcpy(&x, &u, sizeof x);
  return x;
}

const moas_cuda_backend *cpu_backend_table();

}  // namespace moas_test
