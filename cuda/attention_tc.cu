// The tensor-core attention kernels: thin __global__ wrappers that run the block functions of attention_tc.cuh,
// and their launchers, which attention.cu's call in BF16 mode.
#include <algorithm>
#include <string>
#include <vector>

#include "attention_tc.cuh"
#include "check.cuh"

namespace moas {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kTcThreads) attention_tc_forward_kernel(AttentionArgs a) {
  extern __shared__ __align__(32) unsigned char shared[];
  attention_tc_forward_block(TcDeviceBlock{}, a, shared, blockIdx.x, blockIdx.y, blockIdx.z);
}

__global__ void __launch_bounds__(kTcThreads) attention_tc_dq_kernel(AttentionArgs a) {
  extern __shared__ __align__(32) unsigned char shared[];
  attention_tc_dq_block(TcDeviceBlock{}, a, shared, blockIdx.x, blockIdx.y, blockIdx.z);
}

__global__ void __launch_bounds__(kTcThreads) attention_tc_dkdv_kernel(AttentionArgs a) {
  extern __shared__ __align__(32) unsigned char shared[];
  attention_tc_dkdv_block(TcDeviceBlock{}, a, shared, blockIdx.x, blockIdx.y, blockIdx.z);
}

// The current device's compute capability and opt-in shared memory per block; zeros when they cannot be read.
// Asked at every BF16 attention launch, so each thread remembers what it read per device: they never change.
struct DeviceLimits {
  int major = 0, shared = 0;
};
DeviceLimits current_device_limits() {
  thread_local std::vector<DeviceLimits> known;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();  // the fp32 kernels serve; their launch reports a broken device
    return {};
  }
  if ((size_t)device < known.size() && known[(size_t)device].major > 0) return known[(size_t)device];
  DeviceLimits limits;
  if (cudaDeviceGetAttribute(&limits.major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&limits.shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return {};
  }
  if ((size_t)device >= known.size()) known.resize((size_t)device + 1);
  known[(size_t)device] = limits;
  return limits;
}

}  // namespace

// bfloat16 WMMA needs compute capability 8.0; a head_dim whose tiles do not fit the device's shared memory keeps the
// fp32 kernels (which need less).
bool tensor_core_attention(int64_t head_dim) {
  const DeviceLimits limits = current_device_limits();
  const size_t largest = std::max(tc_forward_shared_bytes(head_dim), tc_dkdv_shared_bytes(head_dim));
  return limits.major >= 8 && largest <= (size_t)limits.shared;
}

int32_t attention_tc_forward(const AttentionArgs &a, void *stream) {
  return launch(attention_tc_forward_kernel, tc_query_grid(a), kTcThreads, tc_forward_shared_bytes(a.dims.head_dim),
                a, stream, "attention_forward (tensor cores)");
}

int32_t attention_tc_backward(const AttentionArgs &a, void *stream) {
  if (launch(attention_tc_dq_kernel, tc_query_grid(a), kTcThreads, tc_dq_shared_bytes(a.dims.head_dim), a, stream,
             "attention_backward (tensor cores, dq)") != kOk)
    return kFailed;
  return launch(attention_tc_dkdv_kernel, tc_key_grid(a), kTcThreads, tc_dkdv_shared_bytes(a.dims.head_dim), a,
                stream, "attention_backward (tensor cores, dk, dv)");
}

}  // namespace cuda
}  // namespace moas
