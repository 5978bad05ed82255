// Where the tokens of a forward sit, on the device: every token's position and the sequence bounds (the row
// descriptors of dense attention), and RoPE's tables — what a CUDA model and a CUDA layer hand their blocks through
// CudaContext.
#pragma once

#include <cstdint>
#include <vector>

#include "cuda_attention.hpp"
#include "device_array.hpp"
#include "rope.hpp"

namespace moas {

// pos[b * Tn + t] = past + t and begin[b] = b * Tn (b <= B), uploaded.
inline void upload_positions(const moas_cuda_backend &t, int64_t B, int64_t Tn, int64_t past,
                             DeviceArray<int32_t> *pos, DeviceArray<int64_t> *begin) {
  std::vector<int32_t> p((size_t)(B * Tn));
  std::vector<int64_t> b((size_t)B + 1);
  for (int64_t n = 0; n < B * Tn; n++) p[(size_t)n] = (int32_t)(past + n % Tn);
  for (int64_t s = 0; s <= B; s++) b[(size_t)s] = s * Tn;
  pos->upload(t, p.data(), B * Tn);
  begin->upload(t, b.data(), B + 1);
}

// RoPE's cos / sin tables (rope.hpp's RopeTable, built the same way) on the device; empty without RoPE.
struct DeviceRope {
  DeviceArray<float> cos, sin;
  int64_t half = 0;

  void build(const moas_cuda_backend &t, const ModelConfig &config) {
    if (config.position != PositionKind::Rope) return;
    RopeTable<float> table;
    table.build(config.block_size, config.head_dim(), config.rope_base);
    half = table.half;
    cos.upload(t, table.cos.data(), (int64_t)table.cos.size());
    sin.upload(t, table.sin.data(), (int64_t)table.sin.size());
  }
  void fill(CudaContext *ctx) const {
    if (half == 0) return;
    ctx->rope_cos = cos.get();
    ctx->rope_sin = sin.get();
    ctx->rope_half = half;
  }
};

}  // namespace moas
