// Memory behind a device backend table (cuda_backend.h), owned like a std::vector that cannot be read from the host:
// sized with reserve, freed with its owner. Table calls that fail become moas::Error with the backend's reason, so
// the model code reads as a list of steps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "base/error.hpp"
#include "cuda_host/cuda_backend.h"

namespace moas {

// Throws MOAS_ERR_INTERNAL ("CUDA backend: <what>: <reason>") unless `status` is 0.
inline void device_check(const moas_cuda_backend &table, int32_t status, const char *what) {
  if (status != 0) fail(MOAS_ERR_INTERNAL, std::string("CUDA backend: ") + what + ": " + table.last_error());
}

// Makes device `index` and matmul `precision` (MOAS_MATMUL_*) the calling thread's: both are per-thread state of
// CUDA and the backend, and a model or layer may be called from any thread, so its every entry binds them.
inline void bind_device(const moas_cuda_backend &table, int32_t index, int32_t precision) {
  device_check(table, table.set_device(index), "set_device");
  device_check(table, table.set_matmul_precision(precision), "set_matmul_precision");
}

template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(const DeviceArray &) = delete;
  DeviceArray &operator=(const DeviceArray &) = delete;
  DeviceArray(DeviceArray &&other) noexcept { *this = std::move(other); }
  DeviceArray &operator=(DeviceArray &&other) noexcept {
    std::swap(table_, other.table_);
    std::swap(ptr_, other.ptr_);
    std::swap(capacity_, other.capacity_);
    return *this;
  }
  ~DeviceArray() {
    if (ptr_) table_->free(ptr_);
  }

  // Room for at least n elements; the contents are not kept when it grows.
  void reserve(const moas_cuda_backend &table, int64_t n) {
    if (n <= capacity_ && ptr_) return;
    if (ptr_) table_->free(ptr_);
    ptr_ = nullptr;
    capacity_ = 0;
    table_ = &table;
    void *p = table.alloc((size_t)(n > 0 ? n : 1) * sizeof(T));
    MOAS_REQUIRE(p != nullptr, MOAS_ERR_OUT_OF_MEMORY,
                 std::string("CUDA backend: cannot allocate ") + std::to_string((size_t)n * sizeof(T)) +
                 " bytes of device memory: " + table.last_error() + " (a smaller batch or model may fit)");
    ptr_ = static_cast<T *>(p);
    capacity_ = n;
  }
  // reserve, then n elements copied from the host.
  void upload(const moas_cuda_backend &table, const T *host, int64_t n) {
    reserve(table, n);
    if (n > 0) device_check(table, table.copy(ptr_, host, (size_t)n * sizeof(T), nullptr), "copy to the device");
  }
  void download(T *host, int64_t n) const {
    if (n > 0) device_check(*table_, table_->copy(host, ptr_, (size_t)n * sizeof(T), nullptr), "copy to the host");
  }
  void zero(int64_t n) {
    if (n > 0) device_check(*table_, table_->zero(ptr_, (size_t)n * sizeof(T), nullptr), "zero");
  }

  T *get() const { return ptr_; }
  int64_t capacity() const { return capacity_; }

 private:
  const moas_cuda_backend *table_ = nullptr;
  T *ptr_ = nullptr;
  int64_t capacity_ = 0;
};

}  // namespace moas
