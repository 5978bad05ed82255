// MoAS (SPEC §3) on a CUDA device: MoasAttention (moas.hpp) step for step. The router MLP, the softmax, the branches
// (CudaScheme, routed rows for top-1), the mixing (scatter_add_rows with each row's weight) and the whole backward
// (the load-balance gradient and the softmax backward included) run on the device. The per-token routing decisions
// on [N, S] — the gate dropout, the top-1 choice and row sets, the load-balance loss and, when asked, the router
// stats — run on the host, after one download of the gates per layer and forward: S is at most 4, so these are
// small, and the host computes them with the CPU's own functions, deterministically and bit for bit as the CPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cuda_host/cuda_attention.hpp"
#include "cuda_host/cuda_scheme.hpp"
#include "cuda_host/device_array.hpp"
#include "ops/rows.hpp"

namespace moas {

class CudaMoas final : public CudaAttention {
 public:
  CudaMoas(const moas_cuda_backend &t, const ModelConfig &config, const ParamTable<float> &params,
           const std::string &prefix);

  void forward(const float *values, const float *x, float *y, const CudaContext &ctx, bool training) override;
  void backward(const float *values, float *grads, const float *x, float *dy, float *dx, const CudaContext &ctx,
                double aux_grad_scale) override;
  double aux_loss() const override { return aux_; }
  bool router_stats(RouterStats *out) const override;
  std::vector<float> gates(int64_t *width) const override {
    *width = n_branches_;
    return gates_;
  }

 private:
  bool routed() const { return mode_ != MoasMode::Static; }
  void route(const CudaContext &ctx);

  const moas_cuda_backend &t_;
  MoasMode mode_;
  int64_t width_, n_branches_, router_hidden_;
  std::vector<CudaScheme> branches_;
  int64_t w1_ = -1, b1_ = -1, w2_ = -1, b2_ = -1;  // router.0 and router.2 offsets

  // Last forward. Host: gates [N, S] (pre-dropout; 1/S for static), mix [N, S] (the weight each branch's output
  // gets), the top-1 row sets, the mean gates and the loss.
  std::vector<float> gates_, mix_;
  std::vector<RowSet> routed_rows_;
  std::vector<double> mean_gate_;
  double aux_ = 0;
  // Device: the router's hidden layer [N, C/4] before and after GELU, its gates [N, S], mix [N, S]; the top-1 row
  // sets packed per branch ([S, N] rows and positions, [S, batch + 1] bounds); per branch the compact rows' weights
  // [S, N] and its output z [m_k, C].
  DeviceArray<float> hidden_pre_, hidden_, gates_d_, mix_d_, scale_;
  DeviceArray<int64_t> routed_row_, routed_begin_;
  DeviceArray<int32_t> routed_pos_;
  std::vector<CudaRows> rows_;  // [S] each branch's query tokens
  std::vector<DeviceArray<float>> z_;

  // Backward scratch: dz [m_k, C], d_mix [N, S] (turned into d_gates in place), the load-balance gradient's column
  // terms [S] and their rows [N, S], the router logits' gradient [N, S], the router's hidden gradient [N, C/4].
  DeviceArray<float> dz_, d_mix_, balance_grad_, balance_rows_, d_logits_, d_hidden_;
};

}  // namespace moas
