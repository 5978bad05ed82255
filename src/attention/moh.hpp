// Mixture-of-Heads (SPEC §4) as a HeadSelectionStrategy on one scheme: heads 0 .. h_s-1 are shared (every token),
// the E routed heads follow and each token activates K of them (MixtureOfHeads); StaticPruning{k} keeps heads
// 0 .. k-1 for every token. y_t = c_proj(concat_i gate_t,i head_i(t)).
//
// Inactive (token, head) pairs are not attended: each routed head keeps the rows of its tokens, and attention runs
// for each head's rows against all keys (causal by original position). Tokens that chose the same heads are projected
// together (their queries, and their heads' slice of c_proj) in one product per group. When head sets have few tokens
// each (short sequences: RustGPT's one sequence of 80), such groups would be many thin products plus the copies
// around them, costing more than they save; then the projections are whole — every head's query for every token in
// the one [q; k; v] product, c_proj over all heads with inactive pairs' gates 0 — and only attention is routed. The
// always-active heads form a prefix and run dense. A kv head is computed when a query head of its group can be active
// (all kv heads for MixtureOfHeads, a prefix for StaticPruning).
#pragma once

#include <array>
#include <string>
#include <utility>
#include <vector>

#include "attention/attention.hpp"
#include "attention/attention_block.hpp"
#include "attention/attention_options.hpp"
#include "attention/head_projection.hpp"
#include "attention/moh_gates.hpp"
#include "attention/scheme.hpp"

namespace moas {

// Which heads a MoH block computes for every token and which it routes: the gate spec (no routed heads for
// StaticPruning), the always-active prefix P (h_s, or k for StaticPruning) and the kv heads to project (those some
// query head that can be active reads: all for MixtureOfHeads, a prefix for StaticPruning). Shared with CudaMoh.
struct MohLayout {
  MohGateSpec spec;
  int64_t dense_heads, kv_computed;
};
MohLayout moh_layout(const ModelConfig &config);

template <typename T>
class MohAttention final : public AttentionBlock<T> {
 public:
  MohAttention(const ModelConfig &config, ParamTable<T> &params, const std::string &prefix);

  void forward(const ParamTable<T> &params, const T *x, T *y, const BlockContext<T> &ctx, bool training) override;
  void backward(ParamTable<T> &params, const T *x, T *dy, T *dx, const BlockContext<T> &ctx,
                double aux_grad_scale) override;
  double aux_loss() const override { return aux_; }
  std::vector<int64_t> cache_widths() const override { return {kv_computed_ * shape_.head_dim()}; }
  bool router_stats(RouterStats *out) const override;

  std::vector<T> gates(int64_t *width) const override {
    *width = shape_.heads;
    return gate_;
  }

 private:
  struct RoutedHead {  // the compact rows of one routed head
    RowSet rows;
    std::vector<T> q, out, gated, lse;   // [m, d], [m, d], [m, d], [m]
    std::vector<T> d_gated, d_out, d_q;  // backward scratch
  };
  struct Group {  // tokens projected together for the same routed heads: one head set, or one head's tokens
    std::vector<int64_t> tokens;  // ascending
    std::vector<int64_t> heads;   // absolute head indices, ascending
  };

  void route(const ParamTable<T> &params, const T *x, const BlockContext<T> &ctx);
  void build_groups(int64_t N);
  int64_t set_index(uint64_t set) const;
  void move_group_rows(const Group &g, T *group_buffer, std::vector<T> RoutedHead::*field, bool to_heads);
  struct GroupScratch {  // one per thread
    GroupScratch(int64_t width, int64_t head_dim) : projection(width, head_dim) {}
    HeadProjection<T> projection;
    std::vector<T> x, h, d, rows;  // a group's gathered inputs [m, C], head rows [m, K d], their gradients, [m, C] rows
  };
  template <class Work>
  void for_each_group(Work &&work);
  // Fills heads_ (kept, so a call allocates nothing) and returns it.
  const std::vector<QueryHead<T>> &query_heads(const BlockContext<T> &ctx);
  // Columns of dense_: queries (of the always-active heads, or of every head with whole projections), then the
  // computed kv heads' keys, then their values. gated_dense_ has the queries' width.
  int64_t query_columns() const { return (whole_projections_ ? shape_.heads : dense_heads_) * shape_.head_dim(); }
  int64_t dense_width() const { return query_columns() + 2 * kv_computed_ * shape_.head_dim(); }
  void gather_dense_weights(const T *w, const T *bias);
  std::array<std::array<int64_t, 3>, 3> dense_row_blocks() const;
  KeyValues<T> key_values(const BlockContext<T> &ctx) const;

  SchemeShape shape_;
  MohGateSpec spec_;
  bool mixture_;           // MixtureOfHeads (else StaticPruning)
  int64_t dense_heads_;    // P: heads 0 .. P-1 run for every token (h_s, or k for StaticPruning)
  int64_t kv_computed_;    // kv heads 0 .. kv_computed_-1 are projected
  SchemeWeights w_;
  // wg [E, C], wg_0 [2, C] and wg_1 [h_s, C], those that exist, back to back: one [router_rows_, C] weight whose
  // logits hold the routed, head-type and shared columns in that order.
  int64_t w_routers_ = -1, router_rows_ = 0;
  AttentionOptions options_;

  // Last forward.
  std::vector<T> logits_;            // [N, router_rows_]
  std::vector<T> r_, s_, a_, gate_;  // [N, E] routed softmax, [N, h_s], [N, 2], [N, H]
  std::vector<uint8_t> selected_;    // [N, E] top-K indicator
  // [N, dense_width()], [N, P d], [N, query_columns()], [P N]
  std::vector<T> dense_, out_dense_, gated_dense_, lse_dense_;
  std::vector<T> w_dense_, b_dense_;  // the rows of [q; k; v] dense_ needs
  std::vector<RoutedHead> routed_;
  std::vector<Group> groups_;
  bool whole_projections_ = false;  // few tokens per head set: projections over all heads, no groups
  std::vector<int64_t> slot_;  // [N, E] token n's row among routed head i's rows (-1 if not selected); groups only
  std::vector<GroupScratch> scratch_;
  std::vector<std::vector<T>> group_dw_, group_db_;  // per group: the gradients of its heads' weights
  double aux_ = 0;
  std::vector<uint64_t> set_of_, sorted_sets_;           // [N] each token's routed heads as a bit set, and sorted
  std::vector<std::pair<int64_t, uint64_t>> set_sizes_;  // (tokens, set) of each distinct non-empty set, by set
  std::vector<QueryHead<T>> heads_;
  std::vector<QueryHeadGrad<T>> head_grads_;
  std::vector<uint8_t> kv_read_;  // [kv_computed_] whether some listed head read kv head g (backward)
  std::vector<T> balance_row_;    // [E] the load-balance gradient of every token's routed softmax
  std::vector<double> f_, p_;  // [E] fraction of tokens selecting head i, mean routed softmax

  // Backward scratch.
  std::vector<T> d_gate_, d_gated_dense_, d_out_dense_, d_dense_, dw_dense_, db_dense_, d_r_, d_s_, d_a_, d_logits_;
};

// The router statistics of one MixtureOfHeads forward (E > 0 routed heads, K > 0 active): the routed softmax r [N, E],
// the gates [N, H] (routed heads in the last E columns), the head-type softmax a [N, 2] (null without it), the
// fraction f [E] of tokens selecting each routed head and the load-balance loss. CudaMoh reports through it too.
template <typename T>
RouterStats moh_router_stats(const MohGateSpec &spec, int64_t H, int64_t N, const T *r, const T *gate, const T *a,
                             const std::vector<double> &f, double aux);

extern template class MohAttention<float>;
extern template class MohAttention<double>;

}  // namespace moas
