// The CoPE attention kernels: thin wrappers around cope_attention.cuh's block functions, and their launchers.
#include <string>

#include "check.cuh"
#include "cope_attention.cuh"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kCopeThreads) cope_forward_kernel(CopeArgs c) {
  extern __shared__ __align__(16) unsigned char shared[];
  cope_forward_block(CopeDeviceBlock{}, c, shared, blockIdx.x, blockIdx.y, blockIdx.z);
}

__global__ void __launch_bounds__(kCopeThreads) cope_backward_kernel(CopeArgs c) {
  extern __shared__ __align__(16) unsigned char shared[];
  cope_backward_block(CopeDeviceBlock{}, c, shared, blockIdx.x, blockIdx.y);
}

__global__ void __launch_bounds__(kCopeThreads) cope_embedding_grad_kernel(CopeArgs c) {
  cope_embedding_grad_block(CopeDeviceBlock{}, c, blockIdx.x);
}

}  // namespace

int32_t cope_attention_forward(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                               const moas_cuda_query_head *heads, int64_t n_heads, const float *e, int64_t max_pos,
                               const moas_cuda_dropout *dropout, void *stream) {
  if (check_attention_args("cope_attention_forward", dims, kv, heads, n_heads) != kOk ||
      check_dropout("cope_attention_forward", dropout) != kOk)
    return kFailed;
  if (!e || max_pos < 1) return fail("cope_attention_forward: no position embeddings (e null or max_pos < 1)");
  const CopeArgs c{attention_args(*dims, *kv, heads, nullptr, n_heads, nullptr, dropout), e, max_pos, nullptr, nullptr};
  return launch(cope_forward_kernel, cope_forward_grid(c), kCopeThreads, cope_shared_bytes(c, false), c, stream,
                "cope_attention_forward");
}

int32_t cope_attention_backward(const moas_cuda_attention_dims *dims, const moas_cuda_key_values *kv,
                                const moas_cuda_query_head *heads, const moas_cuda_query_head_grad *grads,
                                int64_t n_heads, const moas_cuda_key_value_grads *dkv, const float *e, int64_t max_pos,
                                float *de, float *scratch, const moas_cuda_dropout *dropout, void *stream) {
  if (check_attention_args("cope_attention_backward", dims, kv, heads, n_heads) != kOk ||
      check_dropout("cope_attention_backward", dropout) != kOk)
    return kFailed;
  if (!e || max_pos < 1) return fail("cope_attention_backward: no position embeddings (e null or max_pos < 1)");
  if (!dkv || (n_heads > 0 && (!grads || !de || !scratch))) return fail("cope_attention_backward: a null argument");
  if (kv->first_key != 0) return fail("cope_attention_backward: the keys must start at position 0 (first_key 0)");
  const CopeArgs c{attention_args(*dims, *kv, heads, grads, n_heads, dkv, dropout), e, max_pos, de, scratch};
  if (launch(cope_backward_kernel, cope_backward_grid(c), kCopeThreads, cope_shared_bytes(c, true), c, stream,
             "cope_attention_backward") != kOk)
    return kFailed;
  if (n_heads == 0) return kOk;
  return launch(cope_embedding_grad_kernel, cope_embedding_grad_grid(c), kCopeThreads, 0, c, stream,
                "cope_attention_backward (de)");
}

}  // namespace cuda
}  // namespace moas
