// The one symbol libmoas_cuda.so exports: moas_cuda_backend_v3 hands libmoas (src/cuda_loader.cpp) the function
// table of src/cuda_backend.h. Also the device probe and the per-thread error message behind every entry.
#include <cstdio>
#include <string>

#include "adamw.cuh"
#include "attention.cuh"
#include "check.cuh"
#include "cope_attention.cuh"
#include "cuda_backend.h"
#include "dropout.cuh"
#include "elementwise.cuh"
#include "embedding.cuh"
#include "gemm.cuh"
#include "loss.cuh"
#include "memory.cuh"
#include "mlp.cuh"
#include "moh_gates.cuh"
#include "norm.cuh"
#include "rope.cuh"
#include "routing.cuh"
#include "rows.cuh"

namespace moas {
namespace cuda {
namespace {

thread_local std::string error_message;

int32_t probe(char *why, size_t why_len) {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  const char *reason = e != cudaSuccess ? cudaGetErrorString(e)
                       : devices == 0   ? "cudaGetDeviceCount found no device"
                                        : nullptr;
  if (reason && why && why_len > 0) std::snprintf(why, why_len, "%s", reason);
  return reason ? 0 : devices;
}

}  // namespace

int32_t fail(const std::string &why) {
  error_message = why;
  return kFailed;
}

const char *last_error() { return error_message.c_str(); }

}  // namespace cuda
}  // namespace moas

extern "C" __attribute__((visibility("default"))) const moas_cuda_backend *moas_cuda_backend_v3(void) {
  using namespace moas::cuda;
  static const moas_cuda_backend table = {MOAS_CUDA_BACKEND_VERSION,
                                          probe,
                                          last_error,
                                          set_device,
                                          device_alloc,
                                          device_free,
                                          copy_memory,
                                          zero_memory,
                                          synchronize_stream,
                                          gemm,
                                          add,
                                          fill_rows,
                                          column_sum_accumulate,
                                          attention_forward,
                                          attention_backward,
                                          router_softmax,
                                          moh_gates,
                                          moh_gates_backward,
                                          select_rows,
                                          gather_rows,
                                          scatter_add_rows,
                                          embedding_forward,
                                          embedding_backward,
                                          norm_forward,
                                          norm_backward,
                                          gelu_forward,
                                          gelu_backward,
                                          swiglu_forward,
                                          swiglu_backward,
                                          cross_entropy_forward,
                                          cross_entropy_backward,
                                          gradient_norm,
                                          adamw_step,
                                          rope_rotate,
                                          dropout_apply,
                                          cope_attention_forward,
                                          cope_attention_backward};
  return &table;
}
