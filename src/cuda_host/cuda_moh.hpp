// Mixture-of-Heads (SPEC §4) on a CUDA device: MohAttention (moh.hpp) step for step, through its "whole projections"
// for every batch size — one [q; k; v] product for every head and token, c_proj over every head with inactive pairs'
// gates 0, and only attention routed (each routed head attends for the compact rows of the tokens that selected it).
// That is the GPU's natural form: few large products instead of one per head set. Model<float> takes the same path
// while head sets have few tokens each, and then the two agree bit for bit on the CPU table; with many tokens per
// set the CPU projects per group instead, the same sums in another order. StaticPruning{k}, as on the CPU, runs the
// prefix of heads 0 .. k-1 densely through the gathered rows of [q; k; v] (no routing).
//
// The load-balance loss E sum_i P_i f_i and the router statistics are taken on the host from the downloaded routed
// softmax and selection (with moh_balance_loss and moh_router_stats themselves): [N, E] values, a few bytes a token,
// summed in token order as the CPU does — a download in each training forward instead of a reduction kernel.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "attention/moh_gates.hpp"
#include "attention/scheme.hpp"
#include "cuda_host/cuda_attend.hpp"
#include "cuda_host/cuda_attention.hpp"
#include "cuda_host/device_array.hpp"

namespace moas {

class CudaMoh final : public CudaAttention {
 public:
  CudaMoh(const moas_cuda_backend &t, const ModelConfig &config, const ParamTable<float> &params,
          const std::string &prefix);

  void forward(const float *values, const float *x, float *y, const CudaContext &ctx, bool training) override;
  void backward(const float *values, float *grads, const float *x, float *dy, float *dx, const CudaContext &ctx,
                double aux_grad_scale) override;
  double aux_loss() const override { return aux_; }
  bool router_stats(RouterStats *out) const override;
  std::vector<float> gates(int64_t *width) const override;

 private:
  void route(const float *values, const float *x, const CudaContext &ctx, bool training);
  // E sum_i P_i f_i of the last forward from its routing, downloaded; r [N, E] and f [E] receive the routed softmax
  // and the fraction of tokens selecting each routed head.
  double balance_loss(std::vector<float> *r, std::vector<double> *f) const;
  void router_backward(const float *values, float *grads, const float *x, float *dx, const CudaContext &ctx,
                       double aux_grad_scale);
  // Columns of dense_: queries (every head for MixtureOfHeads, the k active ones for StaticPruning), then the computed
  // kv heads' keys, then their values — MohAttention's dense_ layout.
  int64_t query_columns() const { return (mixture_ ? shape_.heads : dense_heads_) * shape_.head_dim(); }
  int64_t dense_width() const { return query_columns() + 2 * kv_computed_ * shape_.head_dim(); }
  // StaticPruning's (first row in [q; k; v], first row in the gathered weight, rows), as MohAttention's.
  std::vector<std::array<int64_t, 3>> dense_row_blocks() const;
  moas_cuda_attention_dims dims(const CudaContext &ctx) const;
  moas_cuda_key_values key_values(const CudaContext &ctx) const;
  moas_cuda_dropout attention_dropout(const CudaContext &ctx) const;
  moas_cuda_moh_gate_spec gate_spec() const;
  // Routed head i's compact rows (select_rows' layout), N rows of room each.
  int64_t *routed_row(int64_t i, int64_t N) const { return routed_row_.get() + i * N; }
  int32_t *routed_pos(int64_t i, int64_t N) const { return routed_pos_.get() + i * N; }
  int64_t *routed_begin(int64_t i, int64_t batch) const { return routed_begin_.get() + i * (batch + 1); }
  const int64_t *routed_count(int64_t i, int64_t batch) const { return routed_begin(i, batch) + batch; }
  // Between the column block of each routed head i (P + i, of width head_dim) of a [N, stride] tensor and its
  // compact rows at compact + i N head_dim: gathered, or added back.
  void gather_routed(float *compact, const float *full, int64_t stride, const CudaContext &ctx) const;
  void scatter_add_routed(float *full, int64_t stride, const float *compact, const CudaContext &ctx) const;

  const moas_cuda_backend &t_;
  SchemeShape shape_;
  MohGateSpec spec_;
  bool mixture_;         // MixtureOfHeads (else StaticPruning)
  int64_t dense_heads_;  // P: heads 0 .. P-1 run for every token (h_s, or k for StaticPruning)
  int64_t kv_computed_;  // kv heads 0 .. kv_computed_-1 are projected
  CudaAttend attend_;
  int64_t qkv_w_, qkv_b_, proj_w_, proj_b_;  // offsets; -1 where absent
  // wg, wg_0 and wg_1, those that exist, back to back: one [router_rows_, C] weight (MohAttention's layout).
  int64_t routers_ = -1, router_rows_ = 0;
  int64_t tokens_ = 0;      // N of the last forward
  double aux_ = 0;          // of the last training forward
  std::vector<double> f_;   // [E] the fraction of tokens selecting routed head i, of the last training forward

  // Last forward.
  DeviceArray<float> w_dense_, b_dense_;          // StaticPruning: the rows of [q; k; v] dense_ needs
  DeviceArray<float> logits_, r_, s_, a_, gate_;  // [N, R], [N, E], [N, h_s], [N, 2], [N, H]
  DeviceArray<uint8_t> selected_;                 // [N, E] top-K indicator
  DeviceArray<int64_t> routed_row_, routed_begin_;
  DeviceArray<int32_t> routed_pos_;
  DeviceArray<float> dense_, att_, gated_, lse_;  // [N, F], [N, QW], [N, QW] (MixtureOfHeads), [H, N]
  DeviceArray<float> routed_q_, routed_out_;      // per routed head i: [N, d] from i N d, rows compact
  DeviceArray<moas_cuda_query_head> heads_;
  int64_t n_heads_ = 0;  // descriptors in heads_
  // Backward scratch.
  DeviceArray<float> d_gated_, d_att_, d_gate_, routed_dout_, routed_dq_, d_dense_, dw_dense_, db_dense_;
  DeviceArray<float> d_r_, d_s_, d_a_, balance_grad_, balance_rows_, d_logits_;
  DeviceArray<moas_cuda_query_head_grad> head_grads_;
};

}  // namespace moas
