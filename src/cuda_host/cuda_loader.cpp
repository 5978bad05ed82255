#include "cuda_host/cuda_loader.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>

#include "base/error.hpp"

namespace moas {
namespace {

constexpr const char *kLibrary = "libmoas_cuda.so";
const std::string kNoDevice = "no CUDA device: ";

std::string dl_error() {
  const char *e = dlerror();
  return e ? e : "unknown dlopen error";
}

// The folder of the object this code is linked into (libmoas.so; the executable when linked statically), with a
// trailing '/', or "" when unknown.
std::string own_folder() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&own_folder), &info) == 0 || !info.dli_fname) return "";
  const std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash + 1);
}

}  // namespace

CudaBackend load_cuda_backend(const std::string &path) {
  CudaBackend backend;
  void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    backend.why = kNoDevice + dl_error();
    return backend;
  }
  const auto entry = reinterpret_cast<moas_cuda_backend_entry>(dlsym(handle, MOAS_CUDA_BACKEND_SYMBOL));
  const moas_cuda_backend *table = entry ? entry() : nullptr;
  if (!table || table->version != MOAS_CUDA_BACKEND_VERSION) {
    backend.why = kNoDevice + (!entry ? dl_error()
                                      : path + " has backend version " + std::to_string(table ? table->version : -1) +
                                            ", this libmoas needs " + std::to_string(MOAS_CUDA_BACKEND_VERSION) +
                                            ": install both libraries from one build");
    dlclose(handle);
    return backend;
  }
  backend.table = table;
  char why[256] = "";
  backend.devices = table->probe(why, sizeof why);
  if (backend.devices <= 0) {
    backend.devices = 0;
    backend.why = kNoDevice + why;
  }
  return backend;
}

const CudaBackend &cuda_backend() {
  static std::once_flag once;
  static CudaBackend backend;
  std::call_once(once, [] {
    if (const char *chosen = std::getenv("MOAS_CUDA_LIBRARY"); chosen && *chosen) {
      backend = load_cuda_backend(chosen);
      return;
    }
    const std::string beside_us = own_folder() + kLibrary;
    if (beside_us != kLibrary && access(beside_us.c_str(), F_OK) == 0) {
      backend = load_cuda_backend(beside_us);
      return;
    }
    backend = load_cuda_backend(kLibrary);
    // Only the library itself missing is "not found"; a library that is there but cannot load (a missing
    // libcudart, say) keeps dlopen's message.
    if (!backend.table && backend.why.rfind(kNoDevice + kLibrary + ": cannot open shared object file", 0) == 0)
      backend.why = kNoDevice + kLibrary + " not found (built without CUDA)";
  });
  return backend;
}

void require_cuda_device(int32_t device_index, int64_t head_dim, int64_t seq, int64_t window, int64_t cope_max_pos) {
  const CudaBackend &backend = cuda_backend();
  MOAS_REQUIRE(backend.devices > 0, MOAS_ERR_DEVICE_UNAVAILABLE, backend.why);
  MOAS_REQUIRE(device_index >= 0 && device_index < backend.devices, MOAS_ERR_DEVICE_UNAVAILABLE,
               kNoDevice + "device_index is " + std::to_string(device_index) + " but this machine has " +
               std::to_string(backend.devices) + " CUDA device(s)");
  MOAS_REQUIRE(backend.table->check_device(device_index, head_dim, seq, window, cope_max_pos) == 0,
               MOAS_ERR_DEVICE_UNAVAILABLE,
               std::string("this model cannot run on CUDA ") + backend.table->last_error());
}

// Every attention kind (one scheme, MoAS, MoH) runs on the device now: nothing of a valid config is refused.
}  // namespace moas
