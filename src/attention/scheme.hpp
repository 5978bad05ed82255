// One attention scheme of SPEC §2: H query heads sharing Hkv key/value heads (MHA, GQA, MQA), its q/k/v projections
// and c_proj, evaluated for a subset of query tokens — all of them for dense attention, a branch's routed tokens
// for MoAS top-1. Keys and values are always computed for every token. Output: Z = dropout(c_proj(attention)) for
// the query tokens, compact.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attention/attention.hpp"
#include "attention/attention_options.hpp"
#include "attention/block_context.hpp"
#include "ops/params.hpp"

namespace moas {

struct SchemeShape {
  int64_t width;     // C
  int64_t heads;     // H
  int64_t kv_heads;  // Hkv, dividing H
  bool bias;
  int64_t head_dim() const { return width / heads; }
  int64_t q_width() const { return heads * head_dim(); }
  int64_t kv_width() const { return kv_heads * head_dim(); }
  int64_t qkv_width() const { return q_width() + 2 * kv_width(); }
};

// Offsets of a scheme's tensors: the [q; k; v] weight [W, C] (and bias) and c_proj [C, C] (and bias); -1 if absent.
struct SchemeWeights {
  int64_t qkv = -1, qkv_bias = -1, proj = -1, proj_bias = -1;
};

// Registers the tensors under `prefix` ("transformer.h.0.attn." or a MoAS branch's "...attn.gqa."): c_attn
// [3C, C] when Hkv == H, else q_proj, k_proj, v_proj back to back (one [q; k; v] weight either way), then c_proj.
template <typename T>
SchemeWeights register_scheme_weights(ParamTable<T> &params, const std::string &prefix, const SchemeShape &shape);

template <typename T>
class Scheme {
 public:
  Scheme(ParamTable<T> &params, const std::string &prefix, const SchemeShape &shape, uint32_t dropout_branch);

  // x [N, C]: the block's normalised input for every token. Writes z [rows.size(), C] for the query tokens `rows`,
  // attending with the block's `options` (a MoAS block's branches share one). Keeps what backward needs.
  void forward(const ParamTable<T> &params, const T *x, const RowSet &rows, T *z, const BlockContext<T> &ctx,
               const AttentionOptions &options);
  // dz [rows.size(), C] (clobbered): the gradient of z. Accumulates into dx [N, C] and the parameter gradients.
  void backward(ParamTable<T> &params, const T *x, T *dz, T *dx, const BlockContext<T> &ctx,
                const AttentionOptions &options);

  const SchemeShape &shape() const { return shape_; }

 private:
  // Fills heads_ (kept, so a call allocates nothing) and returns it.
  const std::vector<QueryHead<T>> &query_heads();
  KeyValues<T> key_values() const;

  SchemeShape shape_;
  uint32_t branch_;  // selects this scheme's dropout streams
  SchemeWeights w_;

  const RowSet *rows_ = nullptr;  // of the last forward
  // Dense: one fused [N, W] projection. Routed: q [m, H d] of the query tokens and kv [N, 2 Hkv d] of all tokens.
  std::vector<T> q_, kv_, att_, lse_;
  // Backward scratch.
  std::vector<T> x_rows_, d_att_, d_q_, d_kv_, d_x_rows_;
  std::vector<QueryHead<T>> heads_;
  std::vector<QueryHeadGrad<T>> head_grads_;
};

extern template class Scheme<float>;
extern template class Scheme<double>;

}  // namespace moas
