// The table's check_device: whether a device can run a model of given shapes with this build, answered when the
// model is created (the alternative is a launch failing mid-training).
#include <string>

#include "check.cuh"
#include "device_fit.cuh"

namespace moas {
namespace cuda {
namespace {

// Any kernel of the library tells whether its fat binary holds code (SASS or PTX to compile) for a device: every
// file is built for the same MOAS_CUDA_ARCHS.
__global__ void image_probe_kernel() {}

}  // namespace

int32_t check_device(int32_t index, int64_t head_dim, int64_t seq, int64_t window, int64_t cope_max_pos) {
  cudaDeviceProp prop;
  if (checked(cudaGetDeviceProperties(&prop, index), "check_device: cudaGetDeviceProperties") != kOk) return kFailed;
  const std::string device = "device " + std::to_string(index) + " (" + prop.name + ", compute capability " +
                             std::to_string(prop.major) + "." + std::to_string(prop.minor) + ")";
  int previous = 0;
  if (checked(cudaGetDevice(&previous), "check_device: cudaGetDevice") != kOk ||
      checked(cudaSetDevice(index), "check_device: cudaSetDevice") != kOk)
    return kFailed;
  cudaFuncAttributes attributes;
  const cudaError_t image = cudaFuncGetAttributes(&attributes, image_probe_kernel);
  (void)cudaGetLastError();
  if (checked(cudaSetDevice(previous), "check_device: cudaSetDevice") != kOk) return kFailed;
  if (image != cudaSuccess)
    return fail(device + " has no code in this build (" + cudaGetErrorString(image) +
                "): rebuild with MOAS_CUDA_ARCHS including " + std::to_string(prop.major * 10 + prop.minor));
  const std::string shortfall =
      attention_shared_shortfall(head_dim, seq, window, cope_max_pos, prop.sharedMemPerBlockOptin);
  return shortfall.empty() ? kOk : fail(device + ": " + shortfall);
}

}  // namespace cuda
}  // namespace moas
