// What routed attention really saves: one attention sub-block, forward + backward, at the paper's width C = 384 for
// dense attention, MoAS (static, soft, top-1) and MoH (AllHeads, MixtureOfHeads, StaticPruning), at T = 256, 1024
// and 4096 with B * T = 4096 tokens. Each run reports its tokens/s, the analytic FLOPs of forward + backward under
// the routing it actually observed (block_fwd_bwd_flops below), the GFLOP/s that makes, and the routing shares.
// tools/bench_routing.py runs this and sets each routed variant's time ratio against its dense counterpart beside
// the ratio its FLOPs allow.
//
//   build/bench/bench_attention                                          (the machines' pinned kernel set)
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/bench/bench_attention   (OpenBLAS picks AVX-512 kernels)
//
// Threads: OpenMP's (OMP_NUM_THREADS, else every core).
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "attention/attention_block.hpp"
#include "base/gemm.hpp"
#include "ops/init.hpp"

namespace {

constexpr int64_t kWidth = 384;    // C of the paper's model
constexpr int64_t kTokens = 4096;  // B * T of every run

struct Variant {
  std::string family;  // the comparison group: "MoAS_H6", "MoH_H6", "MoH_H8"
  std::string key;     // this config within its family (benchmark name part)
  std::string label;   // as the report prints it
  moas::ModelConfig config;  // block_size is set per run
};

moas::ModelConfig base_config(int64_t heads) {
  moas::ModelConfig c;
  c.n_embd = kWidth;
  c.mlp_hidden = 4 * kWidth;
  c.n_head = heads;
  c.n_kv_head = heads;
  c.dropout = 0.0f;
  c.attn_dropout = false;
  return c;
}

moas::ModelConfig moas_config(moas::MoasMode mode) {
  moas::ModelConfig c = base_config(6);
  c.attention = moas::AttentionKind::Moas;
  c.moas.mode = mode;
  c.moas.branch_kv_heads = {6, 2, 1};
  return c;
}

moas::ModelConfig all_heads(int64_t heads) {
  moas::ModelConfig c = base_config(heads);
  c.attention = moas::AttentionKind::Moh;
  c.heads.strategy = moas::HeadStrategy::AllHeads;
  return c;
}

moas::ModelConfig mixture_of_heads(int64_t heads, int64_t shared, int64_t active_routed) {
  moas::ModelConfig c = all_heads(heads);
  c.heads.strategy = moas::HeadStrategy::MixtureOfHeads;
  c.heads.num_shared_heads = shared;
  c.heads.num_active_routed_heads = active_routed;
  return c;
}

moas::ModelConfig static_pruning(int64_t heads, int64_t active) {
  moas::ModelConfig c = all_heads(heads);
  c.heads.strategy = moas::HeadStrategy::StaticPruning;
  c.heads.num_active_heads = active;
  return c;
}

std::vector<Variant> variants() {
  using moas::MoasMode;
  return {
      {"MoAS_H6", "mha", "MHA", base_config(6)},
      {"MoAS_H6", "soft", "MoAS soft", moas_config(MoasMode::Soft)},
      {"MoAS_H6", "top1", "MoAS top1", moas_config(MoasMode::Top1)},
      {"MoAS_H6", "static", "MoAS static", moas_config(MoasMode::Static)},
      {"MoH_H6", "all", "AllHeads", all_heads(6)},
      {"MoH_H6", "mix2_2of4", "MoH 2+2/4", mixture_of_heads(6, 2, 2)},
      {"MoH_H6", "prune4", "StaticPruning 4", static_pruning(6, 4)},
      {"MoH_H8", "all", "AllHeads H8", all_heads(8)},
      {"MoH_H8", "mix2_4of6", "MoH 2+4/6", mixture_of_heads(8, 2, 4)},
      {"MoH_H8", "prune6", "StaticPruning 6", static_pruning(8, 6)},
      {"MoH_H8", "mix2_2of6", "MoH 2+2/6", mixture_of_heads(8, 2, 2)},
      {"MoH_H8", "prune4", "StaticPruning 4", static_pruning(8, 4)},
  };
}

// The FLOP model: matrix-product FLOPs of one forward on N = B * T tokens of sequences of length T (2 per
// multiply-add). Causal attention of a query at position p reads p + 1 keys; a set of m query rows spread over the
// sequence reads m (T + 1) / 2 keys on average (exact for dense rows, the expectation for routed ones).
// Backward costs twice the forward, so forward + backward = 3x.
struct FlopModel {
  double N, T, C;
  double key_reads(double m) const { return m * (T + 1) / 2; }

  // One scheme (SPEC §2) with H query heads over Hkv kv heads, its queries on m of the N tokens: q projection,
  // k/v projections of every token, QK^T and PV, c_proj.
  double scheme(double H, double Hkv, double m) const {
    const double d = C / H;
    return 2 * m * C * C + 2 * N * C * 2 * Hkv * d + 2 * 2 * H * d * key_reads(m) + 2 * m * C * C;
  }
  // One query head of width d on m rows: its q slice, its attention rows, its slice of c_proj.
  double head(double d, double m) const { return 2 * m * C * d + 2 * 2 * d * key_reads(m) + 2 * m * d * C; }
};

// Forward + backward FLOPs of the block under the routing of its last forward (`stats`, when it routes).
double block_fwd_bwd_flops(const moas::ModelConfig &c, const moas::RouterStats *stats) {
  const FlopModel f{(double)kTokens, (double)c.block_size, (double)c.n_embd};
  const double N = f.N, C = f.C, H = (double)c.n_head, d = C / H;
  double forward = 0;
  if (c.attention == moas::AttentionKind::Moas) {
    const auto &kv = c.moas.branch_kv_heads;
    const double S = (double)kv.size();
    for (size_t k = 0; k < kv.size(); k++) {
      // top-1 computes a branch's queries only for its tokens; static and soft compute every branch for every token
      const double m = c.moas.mode == moas::MoasMode::Top1 ? stats->top_share[k] * N : N;
      forward += f.scheme(H, (double)kv[k], m);
    }
    if (c.moas.mode != moas::MoasMode::Static) forward += 2 * N * C * (C / 4) + 2 * N * (C / 4) * S;
  } else if (c.attention == moas::AttentionKind::Moh && c.heads.strategy != moas::HeadStrategy::AllHeads) {
    const double group = H / (double)c.n_kv_head;
    if (c.heads.strategy == moas::HeadStrategy::StaticPruning) {
      const double k = (double)c.heads.num_active_heads;
      forward += k * f.head(d, N) + 2 * N * C * 2 * std::ceil(k / group) * d;
    } else {
      const double shared = (double)c.heads.num_shared_heads, routed = H - shared;
      const double active = (double)c.heads.num_active_routed_heads;
      forward += shared * f.head(d, N) + 2 * N * C * 2 * (double)c.n_kv_head * d;
      for (double fraction : stats->top_share) forward += f.head(d, fraction * N);  // f_i: tokens selecting head i
      const double gate_rows = routed + (shared > 1 ? shared : 0) + (shared > 0 && active > 0 ? 2 : 0);
      forward += 2 * N * C * gate_rows;
    }
  } else {
    forward = f.scheme(H, (double)c.n_kv_head, N);  // dense attention, MoH AllHeads included
  }
  return 3 * forward;
}

void BM_Attention(benchmark::State &state, const Variant &variant, int64_t seq) {
  moas::ModelConfig config = variant.config;
  config.block_size = seq;
  const int64_t batch = kTokens / seq, N = kTokens, C = config.n_embd;

  moas::ParamTable<float> params;
  auto block = moas::make_attention_block<float>(config, params, "transformer.h.0.attn.");
  params.allocate();
  moas::init_normal(params.values.data(), params.total(), 0.02, config.seed, 0);

  std::vector<float> x((size_t)(N * C)), y((size_t)(N * C)), dy((size_t)(N * C)), dy_scratch, dx((size_t)(N * C));
  moas::init_normal(x.data(), N * C, 1.0, config.seed, 1);
  moas::init_normal(dy.data(), N * C, 1.0, config.seed, 2);
  moas::RowSet all_rows;
  all_rows.set_all(batch, seq);
  moas::BlockContext<float> ctx;
  ctx.batch = batch;
  ctx.seq = seq;
  ctx.all_rows = &all_rows;

  auto step = [&] {
    block->forward(params, x.data(), y.data(), ctx, true);
    block->backward(params, x.data(), dy_scratch.data(), dx.data(), ctx, 0.01);
  };
  // backward clobbers dy and accumulates into dx: both are reset outside the timed region.
  auto reset = [&] {
    dy_scratch = dy;
    std::fill(dx.begin(), dx.end(), 0.0f);
  };
  reset();
  step();  // warm-up: the block sizes its buffers on the first call
  for (auto _ : state) {
    state.PauseTiming();
    reset();
    state.ResumeTiming();
    step();
    benchmark::DoNotOptimize(dx.data());
  }

  // Weights and inputs never change, so every iteration routed as the last forward did.
  moas::RouterStats stats;
  const bool routes = block->router_stats(&stats);
  const double flops = block_fwd_bwd_flops(config, routes ? &stats : nullptr);
  const double iterations = (double)state.iterations();
  state.counters["tok/s"] = benchmark::Counter((double)N * iterations, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9 * iterations, benchmark::Counter::kIsRate);
  state.counters["GFLOP_per_iter"] = flops / 1e9;
  state.counters["T"] = (double)seq;
  if (routes)  // MoAS: token share per branch (argmax shares); MoH: fraction of tokens per routed head
    for (size_t i = 0; i < stats.top_share.size(); i++) state.counters["share" + std::to_string(i)] = stats.top_share[i];
  state.SetLabel(variant.label);
}

}  // namespace

int main(int argc, char **argv) {
  for (const Variant &variant : variants())
    for (int64_t seq : {256, 1024, 4096}) {
      const std::string name = variant.family + "/" + variant.key + "/T:" + std::to_string(seq);
      benchmark::RegisterBenchmark(name.c_str(), BM_Attention, variant, seq)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  benchmark::Initialize(&argc, argv);
  const char *coretype = std::getenv("OPENBLAS_CORETYPE");
  benchmark::AddCustomContext("float_gemm", moas::gemm_backend_name());
  benchmark::AddCustomContext("openblas_corename", openblas_get_corename());
  benchmark::AddCustomContext("openblas_coretype_env", coretype ? coretype : "(unset)");
  benchmark::AddCustomContext("threads", std::to_string(omp_get_max_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
