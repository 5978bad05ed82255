// The embedding kernels: thin wrappers around embedding.cuh's block functions, and their launchers.
#include <string>

#include "check.cuh"
#include "embedding.cuh"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kEmbeddingThreads) embedding_forward_kernel(EmbeddingArgs a) {
  embedding_forward_block(EmbeddingDeviceBlock{}, a, blockIdx.x);
}

__global__ void __launch_bounds__(kEmbeddingThreads) embedding_backward_wte_kernel(EmbeddingArgs a) {
  extern __shared__ __align__(16) unsigned char shared[];
  embedding_backward_wte_block(EmbeddingDeviceBlock{}, a, shared, blockIdx.x, blockIdx.y);
}

__global__ void __launch_bounds__(kEmbeddingThreads) embedding_backward_wpe_kernel(EmbeddingArgs a) {
  embedding_backward_wpe_block(EmbeddingDeviceBlock{}, a, blockIdx.x);
}

int32_t check_dims(const char *what, int64_t B, int64_t T, int64_t C) {
  if (B < 0 || T < 0 || C < 0) return fail(std::string(what) + ": B, T and C must be >= 0");
  return kOk;
}

}  // namespace

int32_t embedding_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe, int64_t B, int64_t T,
                          int64_t C, int64_t past, void *stream) {
  if (check_dims("embedding_forward", B, T, C) != kOk) return kFailed;
  if (past < 0) return fail("embedding_forward: past must be >= 0");
  if (B * T * C == 0) return kOk;
  if (!out || !tokens || !wte) return fail("embedding_forward: a null argument");
  EmbeddingArgs a{};
  a.out = out;
  a.tokens = tokens;
  a.wte = wte;
  a.wpe = wpe;
  a.B = B;
  a.T = T;
  a.C = C;
  a.past = past;
  return launch(embedding_forward_kernel, embedding_forward_grid(a), kEmbeddingThreads, 0, a, stream,
                "embedding_forward");
}

int32_t embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int64_t B, int64_t T,
                           int64_t C, int64_t V, void *stream) {
  if (check_dims("embedding_backward", B, T, C) != kOk) return kFailed;
  if (V < 1) return fail("embedding_backward: V must be >= 1");
  if (B * T * C == 0) return kOk;
  if (!dwte || !dout || !tokens) return fail("embedding_backward: a null argument");
  EmbeddingArgs a{};
  a.dwte = dwte;
  a.dwpe = dwpe;
  a.dout = dout;
  a.tokens = tokens;
  a.B = B;
  a.T = T;
  a.C = C;
  a.V = V;
  if (launch(embedding_backward_wte_kernel, embedding_backward_wte_grid(a), kEmbeddingThreads,
             embedding_backward_shared_bytes(), a, stream, "embedding_backward (wte)") != kOk)
    return kFailed;
  return launch(embedding_backward_wpe_kernel, embedding_backward_wpe_grid(a), kEmbeddingThreads, 0, a, stream,
                "embedding_backward (wpe)");
}

}  // namespace cuda
}  // namespace moas
