// The attention layer as a RustGPT-style caller uses it (public ABI, caller-owned buffers): forward + backward
// tokens/s of AllHeads, MixtureOfHeads {2 shared + 4 of 6 routed} and StaticPruning {6 of 8}, at RustGPT's default
// shape (C = 128, H = 8, 4 kv heads, T = 80, one sequence) and at the paper's width and context (C = 384, T = 256,
// B = 12; H = 8 so that 2 + 4 of 6 exists, 4 kv heads). tools/bench_layer.py prints the ratios to AllHeads.
//
//   build/bench/bench_layer [--benchmark_filter=rustgpt]     (BENCH_THREADS=n sets the layer's n_threads)
//
// Threads: OpenMP's (OMP_NUM_THREADS, else every core).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "moas.h"

namespace {

struct Shape {
  const char *name;
  int32_t width, heads, kv_heads, seq, batch;
};

struct Strategy {
  const char *name;
  moas_head_selection selection;
};

constexpr Shape kShapes[] = {{"rustgpt", 128, 8, 4, 80, 1}, {"paper", 384, 8, 4, 256, 12}};

moas_head_selection heads(int32_t strategy, int32_t shared, int32_t routed_k, int32_t active) {
  moas_head_selection s{};
  s.strategy = strategy;
  s.num_shared_heads = shared;
  s.num_active_routed_heads = routed_k;
  s.num_active_heads = active;
  s.load_balance_weight = 0.01f;
  s.gate_variant = MOAS_MOH_GATES_REFERENCE;
  return s;
}

const Strategy kStrategies[] = {{"all", heads(MOAS_HEADS_ALL, 0, 0, 0)},
                                {"mix2_4of6", heads(MOAS_HEADS_MIXTURE, 2, 4, 0)},
                                {"prune6", heads(MOAS_HEADS_STATIC_PRUNING, 0, 0, 6)}};

void check(moas_status s, benchmark::State &state) {
  if (s != MOAS_OK) state.SkipWithError(moas_last_error());
}

void layer_forward_backward(benchmark::State &state, Shape shape, Strategy strategy) {
  moas_layer_config c;
  c.struct_size = sizeof c;
  moas_layer_config_default(&c);
  c.n_embd = shape.width;
  c.n_head = shape.heads;
  c.n_kv_head = shape.kv_heads;
  c.max_seq_len = shape.seq;
  c.attention = MOAS_ATTENTION_MOH;
  c.head_selection = strategy.selection;
  if (const char *t = std::getenv("BENCH_THREADS")) c.n_threads = std::atoi(t);
  moas_layer *layer = nullptr;
  check(moas_layer_create(&c, &layer), state);
  if (!layer) return;
  const size_t n = (size_t)shape.batch * shape.seq * shape.width;
  std::vector<float> x(n), y(n), dx(n);
  for (size_t i = 0; i < n; i++) x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
  for (auto _ : state) {
    check(moas_layer_forward(layer, x.data(), y.data(), n, shape.batch, shape.seq, 1, nullptr), state);
    check(moas_layer_backward(layer, y.data(), dx.data(), n), state);
    benchmark::DoNotOptimize(dx.data());
  }
  state.SetItemsProcessed(state.iterations() * shape.batch * shape.seq);
  moas_layer_destroy(layer);
}

const bool registered = [] {
  for (const Shape &shape : kShapes)
    for (const Strategy &strategy : kStrategies)
      benchmark::RegisterBenchmark((std::string("Layer/") + shape.name + "/" + strategy.name).c_str(),
                                   layer_forward_backward, shape, strategy)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
  return true;
}();

}  // namespace

int main(int argc, char **argv) {
  const char *coretype = std::getenv("OPENBLAS_CORETYPE");
  benchmark::AddCustomContext("libmoas", moas_build_info());
  benchmark::AddCustomContext("openblas_coretype", coretype ? coretype : "(unset)");
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
