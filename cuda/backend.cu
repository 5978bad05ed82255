// The one symbol libmoas_cuda.so exports: moas_cuda_backend_v7 hands libmoas (src/cuda_host/cuda_loader.cpp) the function
// table of src/cuda_host/cuda_backend.h. Also the device probe and the per-thread error message behind every entry.
#include <cstdio>
#include <string>

#include "adamw.cuh"
#include "attention.cuh"
#include "check.cuh"
#include "cope_attention.cuh"
#include "cuda_host/cuda_backend.h"
#include "device_fit.cuh"
#include "dropout.cuh"
#include "elementwise.cuh"
#include "embedding.cuh"
#include "gemm.cuh"
#include "loss.cuh"
#include "memory.cuh"
#include "mlp.cuh"
#include "moas_mix.cuh"
#include "moh_gates.cuh"
#include "moh_heads.cuh"
#include "moh_router.cuh"
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

extern "C" __attribute__((visibility("default"))) const moas_cuda_backend *moas_cuda_backend_v7(void) {
  using namespace moas::cuda;
  // Filled by name: the order of the entries is the header's business.
  static const moas_cuda_backend table = [] {
    moas_cuda_backend t{};
    t.version = MOAS_CUDA_BACKEND_VERSION;
    t.probe = probe;
    t.last_error = last_error;
    t.check_device = check_device;
    t.set_device = set_device;
    t.alloc = device_alloc;
    t.free = device_free;
    t.copy = copy_memory;
    t.zero = zero_memory;
    t.copy_rows = copy_rows;
    t.synchronize = synchronize_stream;
    t.gemm = gemm;
    t.set_matmul_precision = set_matmul_precision;
    t.add = add;
    t.fill_rows = fill_rows;
    t.column_sum_accumulate = column_sum_accumulate;
    t.attention_forward = attention_forward;
    t.attention_backward = attention_backward;
    t.router_softmax = router_softmax;
    t.moh_gates = moh_gates;
    t.moh_gates_backward = moh_gates_backward;
    t.select_rows = select_rows;
    t.gather_rows = gather_rows;
    t.scatter_add_rows = scatter_add_rows;
    t.embedding_forward = embedding_forward;
    t.embedding_backward = embedding_backward;
    t.norm_forward = norm_forward;
    t.norm_backward = norm_backward;
    t.gelu_forward = gelu_forward;
    t.gelu_backward = gelu_backward;
    t.swiglu_forward = swiglu_forward;
    t.swiglu_backward = swiglu_backward;
    t.cross_entropy_forward = cross_entropy_forward;
    t.cross_entropy_backward = cross_entropy_backward;
    t.gradient_norm = gradient_norm;
    t.adamw_step = adamw_step;
    t.rope_rotate = rope_rotate;
    t.dropout_apply = dropout_apply;
    t.cope_attention_forward = cope_attention_forward;
    t.cope_attention_backward = cope_attention_backward;
    // MoAS on the device.
    t.moas_mix_backward = moas_mix_backward;
    // MoH on the device.
    t.moh_gate_heads = moh_gate_heads;
    t.moh_gate_heads_backward = moh_gate_heads_backward;
    t.router_softmax_backward = router_softmax_backward;
    return t;
  }();
  return &table;
}
