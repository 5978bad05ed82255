// Device memory for libmoas's buffers: the table's set_device, alloc, free, copy, zero, copy_rows and synchronize, as
// the CUDA runtime's calls on the calling thread's current device, each failure recorded for last_error(). device_free
// and its siblings are not named like the table's entries: backend.cu fills the table beside the C library's free.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moas {
namespace cuda {

int32_t set_device(int32_t index);

// 0 bytes need no memory: nullptr, with no error recorded. So nullptr means failure only when bytes > 0.
void *device_alloc(size_t bytes);
void device_free(void *ptr);
int32_t copy_memory(void *dst, const void *src, size_t bytes, void *stream);
int32_t zero_memory(void *dst, size_t bytes, void *stream);
int32_t copy_rows(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t width, int64_t rows,
                  void *stream);
int32_t synchronize_stream(void *stream);

}  // namespace cuda
}  // namespace moas
