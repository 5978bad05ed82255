// The CUDA backend, found at run time. libmoas.so never links CUDA: when a config asks for MOAS_DEVICE_CUDA, the
// loader dlopens libmoas_cuda.so (first beside libmoas.so, then on the default library path), takes its function
// table (cuda_backend.h) and asks it how many devices there are. Every way this can fail becomes a message that says
// why, for MOAS_ERR_DEVICE_UNAVAILABLE. Plain C++: no CUDA header is included here.
#pragma once

#include <cstdint>
#include <string>

#include "cuda_host/cuda_backend.h"

namespace moas {

struct CudaBackend {
  const moas_cuda_backend *table = nullptr;  // set once the library is loaded and its version matches
  int32_t devices = 0;                       // what the table's probe found
  std::string why;                           // "no CUDA device: <reason>" when devices == 0
};

// The process's backend: loaded on first use, once (thread-safe); the library then stays loaded. The environment
// variable MOAS_CUDA_LIBRARY, when set, names the library to load instead (an install elsewhere, or the tests' table
// of CPU functions).
const CudaBackend &cuda_backend();

// Loads the backend from `path` (a bare file name searches the default library path) and probes it; each call
// dlopens again. What cuda_backend() does, callable with any path for the tests.
CudaBackend load_cuda_backend(const std::string &path);

// Config validation for device == MOAS_DEVICE_CUDA: throws moas::Error(MOAS_ERR_DEVICE_UNAVAILABLE) saying why the
// device cannot be used (no backend library, no device, device_index out of range, no code for its architecture in
// this build, or a model whose attention needs more shared memory than it has: head_dim; with CoPE, cope_max_pos > 0,
// the keys a row sees over the longest sequence `seq` and the window).
void require_cuda_device(int32_t device_index, int64_t head_dim, int64_t seq, int64_t window, int64_t cope_max_pos);


}  // namespace moas
