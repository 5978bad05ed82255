// The MoH gate kernels, forward and backward: one thread per token, each calling src/attention/moh_gates.hpp.
#include <string>

#include "attention/moh_gates.hpp"
#include "check.cuh"
#include "moh_gates.cuh"

namespace moas {
namespace cuda {
namespace {

constexpr int kGateThreads = 128;

__global__ void moh_gates_kernel(MohGateSpec g, const float *r, const uint8_t *m, const float *s, const float *a,
                                 float *gate, int64_t gate_stride, int64_t N) {
  const int64_t E = g.routed, S = g.shared;
  for (int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; n < N; n += (int64_t)gridDim.x * blockDim.x)
    moh_gates_token(g, r + n * E, m + n * E, s ? s + n * S : nullptr, a ? a + 2 * n : nullptr, gate + n * gate_stride);
}

__global__ void moh_gates_backward_kernel(MohGateSpec g, const float *r, const uint8_t *m, const float *s,
                                          const float *a, const float *dgate, int64_t dgate_stride, float *dr,
                                          float *ds, float *da, int64_t N) {
  const int64_t E = g.routed, S = g.shared;
  for (int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; n < N; n += (int64_t)gridDim.x * blockDim.x)
    moh_gates_token_backward(g, r + n * E, m + n * E, s ? s + n * S : nullptr, a ? a + 2 * n : nullptr,
                             dgate + n * dgate_stride, dr + n * E, s ? ds + n * S : nullptr, a ? da + 2 * n : nullptr);
}

// The spec as the CPU's MohGateSpec, or a message saying what is wrong with it.
int32_t gate_spec(const char *what, const moas_cuda_moh_gate_spec *spec, int64_t N, MohGateSpec *out) {
  if (!spec) return fail(std::string(what) + ": a null argument");
  if (N < 0 || spec->shared < 0 || spec->routed < 0 || spec->active < 0 || spec->active > spec->routed)
    return fail(std::string(what) + ": N, shared and routed must be >= 0 and active in [0, routed]");
  *out = MohGateSpec{spec->shared, spec->routed, spec->active, spec->reference != 0};
  return kOk;
}

unsigned grid_for(int64_t N) {
  const int64_t blocks = (N + kGateThreads - 1) / kGateThreads;
  return (unsigned)(blocks < 65535 ? blocks : 65535);
}

}  // namespace

int32_t moh_gates(const moas_cuda_moh_gate_spec *spec, const float *r, const uint8_t *m, const float *s, const float *a,
                  float *gate, int64_t gate_stride, int64_t N, void *stream) {
  MohGateSpec g;
  if (gate_spec("moh_gates", spec, N, &g) != kOk) return kFailed;
  if (N == 0) return kOk;
  moh_gates_kernel<<<grid_for(N), kGateThreads, 0, (cudaStream_t)stream>>>(g, r, m, s, a, gate, gate_stride, N);
  return launched("moh_gates");
}

int32_t moh_gates_backward(const moas_cuda_moh_gate_spec *spec, const float *r, const uint8_t *m, const float *s,
                           const float *a, const float *dgate, int64_t dgate_stride, float *dr, float *ds, float *da,
                           int64_t N, void *stream) {
  MohGateSpec g;
  if (gate_spec("moh_gates_backward", spec, N, &g) != kOk) return kFailed;
  if (N == 0) return kOk;
  moh_gates_backward_kernel<<<grid_for(N), kGateThreads, 0, (cudaStream_t)stream>>>(g, r, m, s, a, dgate, dgate_stride,
                                                                                    dr, ds, da, N);
  return launched("moh_gates_backward");
}

}  // namespace cuda
}  // namespace moas
