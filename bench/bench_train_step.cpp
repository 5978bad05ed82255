// Training-step throughput of the paper's model (6 layers, 6 heads, 384 wide, T=256, B=12, vocab 65) and the
// fraction of the CPU's fp32 capability its matrix products reach, against two ceilings measured or derived in
// this run: a large SGEMM through the same BLAS, and the theoretical FMA peak of the cores used.
// tools/bench_report.py runs this and prints the ratios.
//
//   OPENBLAS_CORETYPE=Haswell ./bench_train_step             (the machines' pinned kernel set)
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ./bench_train_step   (OpenBLAS picks AVX-512 kernels)
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <omp.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "moas.h"

#ifdef MOAS_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

namespace {

struct Shape {
  int64_t L = 6, H = 6, C = 384, T = 256, B = 12, V = 65;
};

// Matrix-product FLOPs of one training step (forward + backward = 3x forward), attention counted causally.
double step_matmul_flops(const Shape &s, int64_t kv_heads) {
  const double N = (double)(s.B * s.T), C = (double)s.C, d = C / (double)s.H;
  const double qkv = 2 * N * C * (C + 2 * (double)kv_heads * d), proj = 2 * N * C * C, mlp = 2 * 2 * N * C * 4 * C;
  const double attention = 2 * 2 * (double)s.B * (double)s.H * (double)s.T * (double)(s.T + 1) / 2 * d;
  const double head = 2 * N * C * (double)s.V;
  return 3 * ((double)s.L * (qkv + proj + mlp + attention) + head);
}

// Theoretical fp32 peak: cores x clock x 64 FLOP/cycle (two 16-wide FMA units with AVX-512).
double theoretical_peak_flops(int threads) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  double mhz = 0;
  while (std::getline(cpuinfo, line))
    if (line.rfind("cpu MHz", 0) == 0) {
      mhz = std::stod(line.substr(line.find(':') + 1));
      break;
    }
  return threads * mhz * 1e6 * 64;
}

void check(moas_status s) {
  if (s != MOAS_OK) {
    fprintf(stderr, "libmoas: %s: %s\n", moas_status_string(s), moas_last_error());
    std::exit(1);
  }
}

// The SGEMM ceiling: a 2048^3 product through each library libmoas may use for float GEMMs.
template <bool kOneDnn>
void BM_Sgemm(benchmark::State &state) {
  const int n = (int)state.range(0);
  std::vector<float> a((size_t)n * n, 1.0f), b((size_t)n * n, 0.5f), c((size_t)n * n);
  for (auto _ : state) {
#ifdef MOAS_HAVE_DNNL
    if (kOneDnn) dnnl_sgemm('N', 'T', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
#endif
    if (!kOneDnn)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(),
                  n);
    benchmark::DoNotOptimize(c.data());
  }
  const double flops = 2.0 * n * n * n * (double)state.iterations();
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(kOneDnn ? "oneDNN" : "OpenBLAS");
}

void BM_TrainStep(benchmark::State &state) {
  const Shape s;
  const int kv_heads = (int)state.range(0);
  moas_model_config cfg;
  cfg.struct_size = sizeof cfg;
  check(moas_model_config_default(&cfg));
  cfg.n_kv_head = kv_heads;
  moas_model *model = nullptr;
  check(moas_model_create(&cfg, &model));
  moas_adamw_config adamw;
  adamw.struct_size = sizeof adamw;
  check(moas_adamw_config_default(&adamw));
  std::vector<int32_t> tokens((size_t)(s.B * s.T)), targets((size_t)(s.B * s.T));
  for (size_t i = 0; i < tokens.size(); i++) {
    tokens[i] = (int32_t)((i * 7919) % s.V);
    targets[i] = (int32_t)((i * 104729 + 3) % s.V);
  }
  for (auto _ : state) {
    check(moas_zero_grad(model));
    check(moas_forward(model, tokens.data(), targets.data(), (int32_t)s.B, (int32_t)s.T, 1, nullptr, nullptr));
    check(moas_backward(model));
    check(moas_optimizer_step(model, &adamw, nullptr));
  }
  moas_model_destroy(model);
  const double iters = (double)state.iterations();
  const double flops = step_matmul_flops(s, kv_heads) * iters;
  state.counters["tok/s"] = benchmark::Counter((double)(s.B * s.T) * iters, benchmark::Counter::kIsRate);
  state.counters["matmul_GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(kv_heads == s.H ? "MHA" : kv_heads == 1 ? "MQA" : "GQA");
}

}  // namespace

BENCHMARK_TEMPLATE(BM_Sgemm, false)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
#ifdef MOAS_HAVE_DNNL
BENCHMARK_TEMPLATE(BM_Sgemm, true)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
#endif
BENCHMARK(BM_TrainStep)->Arg(6)->Arg(2)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);

int main(int argc, char **argv) {
  benchmark::Initialize(&argc, argv);
  const char *coretype = std::getenv("OPENBLAS_CORETYPE");
  const int threads = omp_get_max_threads();
  benchmark::AddCustomContext("openblas_coretype", coretype ? coretype : "(auto: AVX-512 kernels where present)");
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::AddCustomContext("theoretical_fp32_peak_GFLOP/s", std::to_string(theoretical_peak_flops(threads) / 1e9));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
