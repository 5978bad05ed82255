// Errors of libmoas_cuda.so: every entry point returns 0 or 1 and leaves the reason in a per-thread message that
// libmoas reads through the table's last_error(). Launchers check their launch with cudaGetLastError (an invalid
// configuration, too much shared memory); faults inside a kernel surface at the caller's next synchronisation.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "block.cuh"
#include "cuda_host/cuda_backend.h"

namespace moas {
namespace cuda {

constexpr int32_t kOk = 0, kFailed = 1;

int32_t fail(const std::string &why);  // records why for last_error(), returns kFailed
const char *last_error();

// MOAS_CUDA_SYNC=1 in the environment: every launch waits for its kernel, so a fault inside one is reported under
// that kernel's name rather than by whichever call synchronises next. For debugging: host and device take turns.
inline bool sync_each_launch() {
  static const bool on = [] {
    const char *value = std::getenv("MOAS_CUDA_SYNC");
    return value && *value && std::string(value) != "0";
  }();
  return on;
}

// kOk after a successful launch, else fail("<what>: <CUDA's message>").
inline int32_t launched(const char *what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return fail(std::string(what) + ": " + cudaGetErrorString(e));
  if (!sync_each_launch()) return kOk;
  const cudaError_t ran = cudaDeviceSynchronize();
  if (ran == cudaSuccess) return kOk;
  (void)cudaGetLastError();
  return fail(std::string(what) + " (run with MOAS_CUDA_SYNC): " + cudaGetErrorString(ran));
}

// kOk when a runtime call returned cudaSuccess, else fail("<what>: <CUDA's message>"). The failure is also the
// thread's last CUDA error: taken off here, where it is reported, or the next launched() would report it again.
inline int32_t checked(cudaError_t e, const char *what) {
  if (e == cudaSuccess) return kOk;
  (void)cudaGetLastError();
  return fail(std::string(what) + ": " + cudaGetErrorString(e));
}

// The most dynamic shared memory each kernel has been allowed on each device. A kernel's allowance is one value per
// device, shared by every thread: only ever raised, under a lock, so that a thread whose model needs less (another
// head_dim) cannot lower it between another thread's cudaFuncSetAttribute and that thread's launch.
struct SharedAllowances {
  std::mutex lock;
  std::map<std::pair<const void *, int>, size_t> bytes;  // (kernel, device) -> bytes allowed
};
inline SharedAllowances &shared_allowances() {
  static SharedAllowances allowances;
  return allowances;
}

// Lets `kernel` use `bytes` of dynamic shared memory (above 48 KiB a kernel must opt in), or says why it cannot.
template <typename Kernel>
int32_t allow_shared(Kernel kernel, size_t bytes, const char *what) {
  if (bytes <= 48 * 1024) return kOk;
  int device = 0, limit = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess)
    return launched(what);
  if (bytes > (size_t)limit)
    return fail(std::string(what) + ": needs " + std::to_string(bytes) + " bytes of shared memory per block, this " +
                "device allows " + std::to_string(limit) + " (the attention kernels' shared memory grows with " +
                "head_dim = n_embd / n_head; CoPE's with the keys a row sees, block_size or window, and cope_max_pos)");
  SharedAllowances &allowances = shared_allowances();
  const std::lock_guard<std::mutex> hold(allowances.lock);
  size_t &allowed = allowances.bytes[{reinterpret_cast<const void *>(kernel), device}];
  // Set on every call, not only when raised: the allowance is the context's, and a new context starts without it.
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)std::max(allowed, bytes)) !=
      cudaSuccess)
    return launched(what);
  allowed = std::max(allowed, bytes);
  return kOk;
}

// kOk when dropout is null or has p in [0, 1), else fail("<what>: ...").
inline int32_t check_dropout(const char *what, const moas_cuda_dropout *dropout) {
  if (!dropout || (dropout->p >= 0.0f && dropout->p < 1.0f)) return kOk;
  return fail(std::string(what) + ": dropout p must be in [0, 1) (p " + std::to_string(dropout->p) + ")");
}

// kernel<<<grid, threads, shared_bytes, stream>>>(a), after checking the grid against CUDA's limits and letting the
// kernel have its shared memory; an empty grid launches nothing.
template <typename Kernel, typename Args>
int32_t launch(Kernel kernel, const Grid &grid, int threads, size_t shared_bytes, const Args &a, void *stream,
               const char *what) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return kOk;
  if (grid.x > 2147483647 || grid.y > 65535 || grid.z > 65535)
    return fail(std::string(what) + ": the grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) + ", " +
                std::to_string(grid.z) + ") exceeds CUDA's limits (2^31 - 1, 65535, 65535)");
  if (allow_shared(kernel, shared_bytes, what) != kOk) return kFailed;
  const dim3 blocks((unsigned)grid.x, (unsigned)grid.y, (unsigned)grid.z);
  kernel<<<blocks, threads, shared_bytes, (cudaStream_t)stream>>>(a);
  return launched(what);
}

}  // namespace cuda
}  // namespace moas
