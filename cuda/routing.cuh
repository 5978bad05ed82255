// Router decisions on the GPU, one thread per token, each the CPU's own per-token function: the router softmax
// (softmax.hpp's softmax_row), MoAS top-1's argmax (argmax_lower) and MoH's top-K indicator (top_k_lower), ties to
// the lower index on every backend.
#pragma once

#include <cstdint>

#include "attention/routing.hpp"
#include "base/hd.hpp"
#include "ops/softmax.hpp"

namespace moas {
namespace cuda {

// probs = softmax(logits) over width values (probs may be logits); then the argmax into *choice and the top-k
// indicator into selected[0, width), each where not null.
MOAS_HD inline void router_token(float *probs, const float *logits, int64_t width, int32_t *choice, uint8_t *selected,
                                 int64_t k) {
  softmax_row(probs, logits, width);
  if (choice) *choice = (int32_t)argmax_lower(probs, width);
  if (selected) top_k_lower(probs, width, k, selected);
}

// Launcher (routing.cu); the table's router_softmax.
int32_t router_softmax(float *probs, int64_t probs_stride, const float *logits, int64_t logits_stride, int64_t N,
                       int64_t width, int32_t *choice, uint8_t *selected, int64_t k, void *stream);

}  // namespace cuda
}  // namespace moas
