// Mixture of Attention Schemes (SPEC §3): S branches, each a complete scheme with its own projections, mixed per
// token by a router on the block's normalised input, r = W2 GELU(W1 x + b1) + b2, gates g = softmax(r).
//   static  y = (1/S) sum_k o_k                         (no router)
//   soft    y = sum_k g_k o_k                           (reference-faithful "dynamic")
//   top1    y = g_k* o_k*, k* = argmax g                (only branch k* is computed for the token: its q rows,
//                                                        attention rows and output projection rows; K/V of every
//                                                        branch are still computed for every token)
// Load balance (from this forward's pre-dropout gates): mean_k (mean_{b,t} g_k - 1/S)^2.
#pragma once

#include <string>
#include <vector>

#include "attention/attention_block.hpp"
#include "attention/scheme.hpp"

namespace moas {

// Each branch's tensor prefix under the block's `prefix` ("...attn."): "mha.", "gqa.", "mqa." for the default
// branches (SPEC §8), else "b0.", "b1.", ...
std::vector<std::string> moas_branch_prefixes(const ModelConfig &config, const std::string &prefix);

// SPEC §8's router statistics of a MoAS layer from one forward's (pre-dropout) gates [N, S], their means over the
// tokens and the layer's unweighted load-balance loss; shared with the CUDA block (cuda_moas.hpp).
template <typename T>
RouterStats moas_router_stats(MoasMode mode, const T *gates, int64_t N, int64_t S, const std::vector<double> &mean_gate,
                              double aux);

template <typename T>
class MoasAttention final : public AttentionBlock<T> {
 public:
  MoasAttention(const ModelConfig &config, ParamTable<T> &params, const std::string &prefix);

  void forward(const ParamTable<T> &params, const T *x, T *y, const BlockContext<T> &ctx, bool training) override;
  void backward(ParamTable<T> &params, const T *x, T *dy, T *dx, const BlockContext<T> &ctx,
                double aux_grad_scale) override;
  double aux_loss() const override { return aux_; }
  std::vector<int64_t> cache_widths() const override {
    std::vector<int64_t> widths;
    for (const Scheme<T> &branch : branches_) widths.push_back(branch.shape().kv_width());
    return widths;
  }
  bool router_stats(RouterStats *out) const override;
  std::vector<T> gates(int64_t *width) const override {
    *width = n_branches_;
    return gates_;
  }

 private:
  bool routed() const { return mode_ != MoasMode::Static; }
  void route(const BlockContext<T> &ctx);

  MoasMode mode_;
  int64_t width_, n_branches_, router_hidden_;
  std::vector<Scheme<T>> branches_;
  int64_t w1_ = -1, b1_ = -1, w2_ = -1, b2_ = -1;  // router.0 and router.2
  std::vector<AttentionOptions> options_;           // per branch: the window and its CoPE table

  // Last forward.
  std::vector<T> hidden_pre_, hidden_;  // [N, C/4] router pre-activation and GELU output
  std::vector<T> gates_;                // [N, S] softmax (pre-dropout); 1/S for static
  std::vector<T> mix_;                  // [N, S] the weight each branch's output gets (gates after dropout)
  std::vector<int32_t> choice_;         // [N] top1: the argmax branch
  std::vector<RowSet> routed_rows_;     // top1: the tokens of each branch
  std::vector<const RowSet *> rows_;    // [S] the query tokens of each branch
  std::vector<std::vector<T>> z_;       // [S][m_k, C] branch outputs
  std::vector<double> mean_gate_;       // [S]
  double aux_ = 0;

  // Backward scratch.
  std::vector<T> dz_, d_mix_, d_hidden_, scale_;
};

extern template class MoasAttention<float>;
extern template class MoasAttention<double>;

}  // namespace moas
