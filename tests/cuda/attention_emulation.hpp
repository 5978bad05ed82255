// An attention case's launch arguments over a host arena: what the attention kernels receive on the device, for
// the host emulation of their block functions (test_cuda_blocks.cpp, test_cuda_attention_tc.cpp).
#pragma once

#include <vector>

#include "attention.cuh"
#include "attention/attention_cases.hpp"

namespace cuda_test {

// Holds the descriptors `args` points into: build it in place and keep it while args is used.
struct EmulatedAttention {
  std::vector<moas_cuda_query_head> heads;
  std::vector<moas_cuda_query_head_grad> grads;
  moas_cuda_key_value_grads dkv;
  moas_cuda_dropout dropout;
  moas::cuda::AttentionArgs args;

  EmulatedAttention(const AttentionCase &c, std::vector<float> &arena)
      : heads(c.heads(arena.data(), c.positions.data(), c.begins.data())),
        grads(c.grads(arena.data())),
        dkv(c.key_value_grads(arena.data())),
        dropout(c.cuda_dropout()),
        args(moas::cuda::attention_args(c.cuda_dims(), c.key_values(arena.data()), heads.data(), grads.data(),
                                        (int64_t)heads.size(), &dkv, &dropout)) {}
  EmulatedAttention(const EmulatedAttention &) = delete;
  EmulatedAttention &operator=(const EmulatedAttention &) = delete;
};

}  // namespace cuda_test
