// Errors of libmoas_cuda.so: every entry point returns 0 or 1 and leaves the reason in a per-thread message that
// libmoas reads through the table's last_error(). Launchers check their launch with cudaGetLastError (an invalid
// configuration, too much shared memory); faults inside a kernel surface at the caller's next synchronisation.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace moas {
namespace cuda {

constexpr int32_t kOk = 0, kFailed = 1;

int32_t fail(const std::string &why);  // records why for last_error(), returns kFailed
const char *last_error();

// kOk after a successful launch, else fail("<what>: <CUDA's message>").
inline int32_t launched(const char *what) {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? kOk : fail(std::string(what) + ": " + cudaGetErrorString(e));
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
                "device allows " + std::to_string(limit) + " (head_dim too large for this kernel)");
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes) != cudaSuccess)
    return launched(what);
  return kOk;
}

}  // namespace cuda
}  // namespace moas
