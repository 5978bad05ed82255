// The memory entries of the table (memory.cuh): cudaSetDevice, cudaMalloc / cudaFree, and copies and fills ordered on
// the caller's stream.
#include <string>

#include "check.cuh"
#include "memory.cuh"

namespace moas {
namespace cuda {

int32_t set_device(int32_t index) {
  if (index < 0) return fail("set_device: index must be >= 0 (it is " + std::to_string(index) + ")");
  return checked(cudaSetDevice(index), ("set_device " + std::to_string(index)).c_str());
}

void *device_alloc(size_t bytes) {
  if (bytes == 0) return nullptr;
  void *ptr = nullptr;
  if (checked(cudaMalloc(&ptr, bytes), ("alloc of " + std::to_string(bytes) + " bytes").c_str()) != kOk) return nullptr;
  return ptr;
}

// free has no status to return; a failure (most likely an earlier kernel's fault, sticky) is still recorded.
void device_free(void *ptr) {
  if (ptr) checked(cudaFree(ptr), "free");
}

// Synchronous for the caller, who may read or reuse a host buffer as soon as copy returns.
int32_t copy_memory(void *dst, const void *src, size_t bytes, void *stream) {
  if (bytes == 0) return kOk;
  if (!dst || !src) return fail("copy: a null argument");
  const cudaStream_t s = (cudaStream_t)stream;
  if (checked(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s), "copy") != kOk) return kFailed;
  return checked(cudaStreamSynchronize(s), "copy (synchronize)");
}

int32_t zero_memory(void *dst, size_t bytes, void *stream) {
  if (bytes == 0) return kOk;
  if (!dst) return fail("zero: a null argument");
  return checked(cudaMemsetAsync(dst, 0, bytes, (cudaStream_t)stream), "zero");
}

int32_t copy_rows(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t width, int64_t rows,
                  void *stream) {
  if (width == 0 || rows == 0) return kOk;
  if (!dst || !src) return fail("copy_rows: a null argument");
  const size_t f = sizeof(float);
  return checked(cudaMemcpy2DAsync(dst, (size_t)dst_stride * f, src, (size_t)src_stride * f, (size_t)width * f,
                                   (size_t)rows, cudaMemcpyDeviceToDevice, (cudaStream_t)stream),
                 "copy_rows");
}

int32_t synchronize_stream(void *stream) { return checked(cudaStreamSynchronize((cudaStream_t)stream), "synchronize"); }

}  // namespace cuda
}  // namespace moas
