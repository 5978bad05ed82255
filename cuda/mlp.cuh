// The MLP's nonlinearities on the GPU (the CUDA twin of src/ops/mlp.hpp): one thread per element, each running the CPU's
// per-element function (gelu, gelu_derivative, swiglu, swiglu_derivatives), fast_erf and fast_exp included.
#pragma once

#include <cstdint>

#include "block.cuh"
#include "ops/mlp.hpp"

namespace moas {
namespace cuda {

constexpr int kMlpThreads = 256;
using MlpDeviceBlock = DeviceBlock<kMlpThreads>;
using MlpHostBlock = HostBlock<kMlpThreads>;

struct MlpArgs {
  float *out;         // forward: GELU [n], SwiGLU [N, h]; backward: dinp [n] or dpre [N, 2h]
  const float *dout;  // backward only: [n] or [N, h]
  const float *inp;   // GELU: x [n]; SwiGLU: pre [N, 2h]
  int64_t n;          // elements of out (GELU) or of dout / out (SwiGLU: N h)
  int64_t h;          // SwiGLU's hidden width
};

inline Grid mlp_grid(const MlpArgs &a) { return {ceil_div(a.n, kMlpThreads), 1, 1}; }

template <class Block>
MOAS_HD void gelu_forward_block(const Block &block, const MlpArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t i = x * Block::kThreads + t;
    if (i < a.n) a.out[i] = gelu(a.inp[i]);
  });
}

template <class Block>
MOAS_HD void gelu_backward_block(const Block &block, const MlpArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t i = x * Block::kThreads + t;
    if (i < a.n) a.out[i] = a.dout[i] * gelu_derivative(a.inp[i]);
  });
}

template <class Block>
MOAS_HD void swiglu_forward_block(const Block &block, const MlpArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t e = x * Block::kThreads + t;
    if (e >= a.n) return;
    const int64_t n = e / a.h, i = e % a.h;
    const float *pre = a.inp + n * 2 * a.h;
    a.out[e] = swiglu(pre[i], pre[a.h + i]);
  });
}

template <class Block>
MOAS_HD void swiglu_backward_block(const Block &block, const MlpArgs &a, int64_t x) {
  block.each([&](int t) {
    const int64_t e = x * Block::kThreads + t;
    if (e >= a.n) return;
    const int64_t n = e / a.h, i = e % a.h;
    const float *pre = a.inp + n * 2 * a.h;
    float *dpre = a.out + n * 2 * a.h;
    swiglu_derivatives(a.dout[e], pre[i], pre[a.h + i], dpre + i, dpre + a.h + i);
  });
}

// Launchers (mlp.cu); the table's gelu_* and swiglu_* entries.
int32_t gelu_forward(float *out, const float *inp, int64_t n, void *stream);
int32_t gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n, void *stream);
int32_t swiglu_forward(float *out, const float *pre, int64_t N, int64_t h, void *stream);
int32_t swiglu_backward(float *dpre, const float *dout, const float *pre, int64_t N, int64_t h, void *stream);

}  // namespace cuda
}  // namespace moas
