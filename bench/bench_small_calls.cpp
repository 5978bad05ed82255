// Small calls as RustGPT makes them: one sequence (B = 1) through the attention layer per call, T = 8, 25, 80, at
// RustGPT's shape (C = 128, H = 8, 4 kv heads), each iteration one full layer step: forward (training) + backward +
// Adam step + zero_grad, through the public C ABI only. Each shape runs with n_threads = 1 and with the default
// n_threads = 0 (all cores), so the cost of waking a thread team for tiny work shows as their ratio, and beside them
// a single-thread SGEMM ceiling of this run, so that tools/bench_small_calls.py can print the FLOP floor of each step
// (its analytic matrix-product FLOPs, counter "flops", at the best single-core SGEMM rate).
//
//   bench_small_calls [--benchmark_filter=T8/]        (tools/bench_small_calls.py runs it and prints the table)
//
// Counters: flops (per step, analytic), params (Adam's per-step work is about 10 flops and 16 bytes of traffic per
// parameter; it is not in the FLOP floor), cores_busy (process CPU time / wall time: about 1 for one thread; above
// the threads doing work when idle OpenMP workers spin).
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <dlfcn.h>
#include <omp.h>

#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "moas.h"

#ifdef MOAS_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

namespace {

constexpr int64_t kWidth = 128, kHeads = 8, kKvHeads = 4;
constexpr int64_t kSeqs[] = {8, 25, 80};

struct Kind {
  const char *name;
  int32_t strategy, shared, routed_k;
};

// AllHeads as RustGPT selects it (MOAS_ATTENTION_MOH with MOAS_HEADS_ALL): libmoas builds the same plain GQA block for
// it as for MOAS_ATTENTION_SCHEME (src/attention/attention_block.cpp), so this is also the plain-attention figure.
constexpr Kind kKinds[] = {{"AllHeads", MOAS_HEADS_ALL, 0, 0}, {"MoH2+4of6", MOAS_HEADS_MIXTURE, 2, 4}};
constexpr int32_t kThreadCounts[] = {1, 0};

// Matrix-product FLOPs of one layer step (multiply-add = 2), with N = B T tokens, d = C / H and Ha the heads a token
// attends with (H for AllHeads; h_s + K for MixtureOfHeads, whose routed heads run only for the tokens that chose
// them, K / E of them on average):
//   forward = 2 N C (Ha d)                     (queries of the active heads)
//           + 2 N C (2 Hkv d)                  (keys and values: every token's, whichever heads read them)
//           + 2 N (Ha d) C                     (output projection of the active heads)
//           + 2 * 2 B d Ha T (T + 1) / 2       (causal Q K^T and P V over the T (T + 1) / 2 visible pairs)
//           + 2 N C (E + 2 + h_s)              (MoH only: routed-head, head-type and shared-head routers)
//   step    = 3 * forward                      (backward: a gradient for each operand of every product)
// This is the least the algorithm needs (libmoas computes routed heads' queries and outputs only where active), so
// the floor is a lower bound. Softmax, gates and Adam are not counted.
double step_flops(const Kind &kind, int64_t B, int64_t T) {
  const double N = (double)(B * T), C = (double)kWidth, d = C / (double)kHeads;
  const bool moh = kind.strategy == MOAS_HEADS_MIXTURE;
  const double active = moh ? (double)(kind.shared + kind.routed_k) : (double)kHeads;
  const double projections = 2.0 * N * C * (active * d) + 2.0 * N * C * (2.0 * (double)kKvHeads * d) +
                             2.0 * N * (active * d) * C;
  const double attention = 2.0 * 2.0 * (double)B * d * active * (double)T * (double)(T + 1) / 2.0;
  const double routers = moh ? 2.0 * N * C * (double)((kHeads - kind.shared) + 2 + kind.shared) : 0.0;
  return 3.0 * (projections + attention + routers);
}

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double wall_seconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool ok(moas_status s, benchmark::State &state) {
  if (s == MOAS_OK) return true;
  state.SkipWithError((std::string(moas_status_string(s)) + ": " + moas_last_error()).c_str());
  return false;
}

void layer_step(benchmark::State &state, Kind kind, int64_t seq, int32_t n_threads) {
  moas_layer_config c;
  c.struct_size = sizeof c;
  moas_layer_config_default(&c);
  c.n_embd = (int32_t)kWidth;
  c.n_head = (int32_t)kHeads;
  c.n_kv_head = (int32_t)kKvHeads;
  c.max_seq_len = (int32_t)seq;
  c.attention = MOAS_ATTENTION_MOH;
  c.head_selection.strategy = kind.strategy;
  c.head_selection.num_shared_heads = kind.shared;
  c.head_selection.num_active_routed_heads = kind.routed_k;
  c.head_selection.num_active_heads = 0;
  c.head_selection.gate_variant = MOAS_MOH_GATES_REFERENCE;
  c.n_threads = n_threads;
  moas_layer *layer = nullptr;
  if (!ok(moas_layer_create(&c, &layer), state)) return;

  moas_adamw_config adam;
  adam.struct_size = sizeof adam;
  moas_adamw_config_default(&adam);
  adam.lr = 1e-3f;
  adam.beta1 = 0.9f;
  adam.beta2 = 0.999f;
  adam.eps = 1e-8f;
  adam.weight_decay = 0.0f;
  adam.grad_clip = 0.0f;

  const size_t n = (size_t)(seq * kWidth);
  std::vector<float> x(n), y(n), dx(n), dy_plus(n), dy_minus(n);
  for (size_t i = 0; i < n; i++) {
    x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    dy_plus[i] = (float)((i * 40503u + 17) % 1000) / 50000.0f - 0.01f;
    dy_minus[i] = -dy_plus[i];
  }
  // A fixed dy would push the weights the same way for millions of steps; alternating its sign keeps them near
  // their initialisation, so the routing and the numbers the kernels see stay those of a real run.
  bool flip = false;
  const double cpu0 = process_cpu_seconds(), wall0 = wall_seconds();
  for (auto _ : state) {
    if (!ok(moas_layer_forward(layer, x.data(), y.data(), n, 1, (int32_t)seq, 1, nullptr), state)) break;
    if (!ok(moas_layer_backward(layer, flip ? dy_minus.data() : dy_plus.data(), dx.data(), n), state)) break;
    if (!ok(moas_layer_optimizer_step(layer, &adam, nullptr), state)) break;
    if (!ok(moas_layer_zero_grad(layer), state)) break;
    flip = !flip;
    benchmark::DoNotOptimize(dx.data());
  }
  const double cpu = process_cpu_seconds() - cpu0, wall = wall_seconds() - wall0;
  size_t params = 0, count = 0;
  moas_layer_parameter_count(layer, &count);
  for (size_t i = 0; i < count; i++) {
    moas_parameter_info info;
    info.struct_size = sizeof info;
    if (moas_layer_parameter_info_at(layer, i, &info) == MOAS_OK) params += (size_t)info.numel;
  }
  moas_layer_destroy(layer);
  state.counters["flops"] = step_flops(kind, 1, seq);
  state.counters["params"] = (double)params;
  state.counters["cores_busy"] = wall > 0 ? cpu / wall : 0.0;
  state.SetItemsProcessed(state.iterations() * seq);
}

// One core's SGEMM rate: the ceiling the FLOP floor divides by. The thread count is forced to 1 for the call and
// restored after, and cores_busy (process CPU / wall) shows whether the library really kept to one core.
template <bool kOneDnn>
void sgemm_one_thread(benchmark::State &state) {
  const int n = (int)state.range(0);
  std::vector<float> a((size_t)n * n), b((size_t)n * n), c((size_t)n * n);
  for (size_t i = 0; i < a.size(); i++) {
    a[i] = (float)(i % 17) * 0.01f;
    b[i] = (float)(i % 13) * 0.02f;
  }
  const int saved_omp = omp_get_max_threads();
  const int saved_openblas = openblas_get_num_threads();
  omp_set_num_threads(1);  // oneDNN's OpenMP runtime and the OpenMP build of OpenBLAS read this
  openblas_set_num_threads(1);  // the pthread build of OpenBLAS does not
  const double cpu0 = process_cpu_seconds(), wall0 = wall_seconds();
  for (auto _ : state) {
#ifdef MOAS_HAVE_DNNL
    if (kOneDnn) dnnl_sgemm('N', 'T', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
#endif
    if (!kOneDnn)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(),
                  n);
    benchmark::DoNotOptimize(c.data());
  }
  const double cpu = process_cpu_seconds() - cpu0, wall = wall_seconds() - wall0;
  openblas_set_num_threads(saved_openblas);
  omp_set_num_threads(saved_omp);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * n * n * (double)n * (double)state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["cores_busy"] = wall > 0 ? cpu / wall : 0.0;
  state.SetLabel(kOneDnn ? "oneDNN" : "OpenBLAS");
}

const bool registered = [] {
  benchmark::RegisterBenchmark("Sgemm1/OpenBLAS", sgemm_one_thread<false>)
      ->Arg(1024)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
#ifdef MOAS_HAVE_DNNL
  benchmark::RegisterBenchmark("Sgemm1/oneDNN", sgemm_one_thread<true>)
      ->Arg(1024)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
#endif
  for (const int64_t seq : kSeqs)
    for (const Kind &kind : kKinds)
      for (const int32_t threads : kThreadCounts)
        benchmark::RegisterBenchmark(("LayerStep/T" + std::to_string(seq) + "/" + kind.name + "/threads" +
                                      std::to_string(threads))
                                         .c_str(),
                                     layer_step, kind, seq, threads)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
  return true;
}();

std::string library_path() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&moas_build_info), &info) && info.dli_fname) return info.dli_fname;
  return "(unknown)";
}

std::string env_or(const char *name, const char *fallback) {
  const char *v = std::getenv(name);
  return v ? v : fallback;
}

}  // namespace

int main(int argc, char **argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("libmoas", moas_build_info());
  benchmark::AddCustomContext("libmoas_path", library_path());
  benchmark::AddCustomContext("openblas_coretype", env_or("OPENBLAS_CORETYPE", "(unset)"));
  benchmark::AddCustomContext("openblas_l2_size", env_or("OPENBLAS_L2_SIZE", "(unset)"));
  benchmark::AddCustomContext("openblas_config", openblas_get_config());
  benchmark::AddCustomContext("openblas_core", openblas_get_corename());
#ifdef MOAS_HAVE_DNNL
  const dnnl_version_t *v = dnnl_version();
  const char *runtime = v->cpu_runtime == DNNL_RUNTIME_OMP   ? "OpenMP"
                        : v->cpu_runtime == DNNL_RUNTIME_SEQ ? "sequential"
                        : v->cpu_runtime == DNNL_RUNTIME_TBB ? "TBB"
                                                             : "other";
  benchmark::AddCustomContext("onednn", std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
                                            std::to_string(v->patch) + " (" + runtime + " runtime)");
#endif
  benchmark::AddCustomContext("omp_num_procs", std::to_string(omp_get_num_procs()));
  benchmark::AddCustomContext("omp_wait_policy", env_or("OMP_WAIT_POLICY", "(unset)"));
  benchmark::AddCustomContext("omp_num_threads", env_or("OMP_NUM_THREADS", "(unset)"));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
