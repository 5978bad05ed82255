// Whether a device can run a model's attention, decided when the model is created rather than at its first backward:
// the fp32 attention kernels' shared memory grows with head_dim, CoPE's with the keys a row sees and cope_max_pos,
// and a block may use only the device's per-block limit (the tensor-core kernels fall back to the fp32 ones when
// theirs do not fit, so only the fp32 kernels' needs count). Host code only: the tests call it with any limit.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "attention.cuh"
#include "cope_attention.cuh"

namespace moas {
namespace cuda {

// The most shared memory per block the attention of a model with these shapes asks for (seq: the longest sequence,
// window: 0 or w, cope_max_pos: 0 without CoPE).
inline size_t attention_shared_need(int64_t head_dim, int64_t seq, int64_t window, int64_t cope_max_pos) {
  if (cope_max_pos > 0) {
    CopeArgs c{};
    c.attention.dims = {1, seq, 1, 1, head_dim, window};
    c.max_pos = cope_max_pos;
    return std::max(cope_shared_bytes(c, false), cope_shared_bytes(c, true));
  }
  return std::max({forward_shared_bytes(head_dim), dq_shared_bytes(head_dim), dkdv_shared_bytes(head_dim)});
}

// "" when `limit` bytes per block suffice, else what to change.
inline std::string attention_shared_shortfall(int64_t head_dim, int64_t seq, int64_t window, int64_t cope_max_pos,
                                              size_t limit) {
  const size_t need = attention_shared_need(head_dim, seq, window, cope_max_pos);
  if (need <= limit) return "";
  const std::string sizes = cope_max_pos > 0 ? "CoPE over " + std::to_string(max_visible_keys(seq, window)) +
                                                   " keys per row and cope_max_pos " + std::to_string(cope_max_pos)
                                             : "head_dim " + std::to_string(head_dim);
  return "attention with " + sizes + " needs " + std::to_string(need) + " bytes of shared memory per block and this " +
         "device allows " + std::to_string(limit) + (cope_max_pos > 0 ? ": shorten block_size or set a window"
                                                                       : ": use more heads (n_embd / n_head smaller)");
}

// The table's check_device (device_check.cu).
int32_t check_device(int32_t index, int64_t head_dim, int64_t seq, int64_t window, int64_t cope_max_pos);

}  // namespace cuda
}  // namespace moas
