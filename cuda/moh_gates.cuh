// MoH's per-token gates on the GPU (SPEC §4): one thread per token runs moh_gates_token / moh_gates_token_backward
// (src/attention/moh_gates.hpp), the functions the CPU backend calls.
#pragma once

#include <cstdint>

#include "cuda_host/cuda_backend.h"

namespace moas {
namespace cuda {

// Launchers (moh_gates.cu); the table's moh_gates and moh_gates_backward.
int32_t moh_gates(const moas_cuda_moh_gate_spec *spec, const float *r, const uint8_t *m, const float *s, const float *a,
                  float *gate, int64_t gate_stride, int64_t N, void *stream);
int32_t moh_gates_backward(const moas_cuda_moh_gate_spec *spec, const float *r, const uint8_t *m, const float *s,
                           const float *a, const float *dgate, int64_t dgate_stride, float *dr, float *ds, float *da,
                           int64_t N, void *stream);

}  // namespace cuda
}  // namespace moas
