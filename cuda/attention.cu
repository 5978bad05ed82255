// The attention kernels: thin __global__ wrappers that run the block functions of attention.cuh (where the
// algorithm and its shared memory layout are described) on the device, and their launchers.
#include <string>

#include "attention.cuh"
#include "attention_tc.cuh"
#include "check.cuh"
#include "gemm.cuh"
#include "moas.h"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kAttentionThreads) attention_forward_kernel(AttentionArgs a) {
  extern __shared__ __align__(16) unsigned char shared[];
  attention_forward_block(AttentionDeviceBlock{}, a, shared, blockIdx.x, blockIdx.y, blockIdx.z);
}

__global__ void __launch_bounds__(kAttentionThreads) attention_dq_kernel(AttentionArgs a) {
  extern __shared__ __align__(16) unsigned char shared[];
  attention_dq_block(AttentionDeviceBlock{}, a, shared, blockIdx.x, blockIdx.y, blockIdx.z);
}

__global__ void __launch_bounds__(kAttentionThreads) attention_dkdv_kernel(AttentionArgs a) {
  extern __shared__ __align__(16) unsigned char shared[];
  attention_dkdv_block(AttentionDeviceBlock{}, a, shared, blockIdx.x, blockIdx.y, blockIdx.z);
}

// BF16 mode runs attention's products on tensor cores too, where the device and head_dim allow; otherwise fp32.
bool uses_tensor_cores(int64_t head_dim) {
  return matmul_precision() == MOAS_MATMUL_BF16 && tensor_core_attention(head_dim);
}

}  // namespace

// The checks src/attention/attention.cpp makes on its dims; the head descriptors live on the device and are the caller's to
// keep consistent (rows sorted by position within each sequence, positions below seq, every key seen held).
int32_t check_attention_args(const char *what, const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                             const void *heads, int64_t n_heads) {
  if (!dims || !kv || (n_heads > 0 && !heads)) return fail(std::string(what) + ": a null argument");
  const moas_cuda_attention_dims &s = *dims;
  if (s.batch < 0 || s.seq < 0 || s.heads <= 0 || s.kv_heads <= 0 || s.head_dim <= 0 || s.window < 0 || n_heads < 0)
    return fail(std::string(what) + ": batch/seq/window/n_heads must be >= 0 and heads/kv_heads/head_dim > 0");
  if (s.heads % s.kv_heads != 0)
    return fail(std::string(what) + ": heads (" + std::to_string(s.heads) + ") must be a multiple of kv_heads (" +
                std::to_string(s.kv_heads) + ")");
  if (kv->first_key < 0 || kv->seq_stride < 0)
    return fail(std::string(what) + ": first_key and seq_stride must be >= 0");
  if (s.batch > 65535 || n_heads > 65535 || s.kv_heads > 65535)
    return fail(std::string(what) + ": batch, listed heads and kv heads are each limited to 65535 per launch");
  return kOk;
}

int32_t attention_forward(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                          const moas_cuda_query_head *heads, int64_t n_heads, const moas_cuda_dropout *dropout,
                          void *stream) {
  if (check_attention_args("attention_forward", dims, kv, heads, n_heads) != kOk ||
      check_dropout("attention_forward", dropout) != kOk)
    return kFailed;
  const AttentionArgs a = attention_args(*dims, *kv, heads, nullptr, n_heads, nullptr, dropout);
  if (uses_tensor_cores(dims->head_dim)) return attention_tc_forward(a, stream);
  return launch(attention_forward_kernel, query_grid(a), kAttentionThreads, forward_shared_bytes(dims->head_dim), a,
                stream, "attention_forward");
}

int32_t attention_backward(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                           const moas_cuda_query_head *heads, const moas_cuda_query_head_grad *grads, int64_t n_heads,
                           const moas_cuda_key_value_grads *dkv, const moas_cuda_dropout *dropout, void *stream) {
  if (check_attention_args("attention_backward", dims, kv, heads, n_heads) != kOk ||
      check_dropout("attention_backward", dropout) != kOk)
    return kFailed;
  if (!dkv || (n_heads > 0 && !grads)) return fail("attention_backward: a null argument");
  if (kv->first_key != 0) return fail("attention_backward: the keys must start at position 0 (first_key 0)");
  const AttentionArgs a = attention_args(*dims, *kv, heads, grads, n_heads, dkv, dropout);
  if (uses_tensor_cores(dims->head_dim)) return attention_tc_backward(a, stream);
  if (launch(attention_dq_kernel, query_grid(a), kAttentionThreads, dq_shared_bytes(dims->head_dim), a, stream,
             "attention_backward (dq)") != kOk)
    return kFailed;
  return launch(attention_dkdv_kernel, key_grid(a), kAttentionThreads, dkdv_shared_bytes(dims->head_dim), a, stream,
                "attention_backward (dk, dv)");
}

}  // namespace cuda
}  // namespace moas
