// Decoding at the memory bound. On the paper's model (6 layers, 384 wide, vocabulary 65), through the public ABI:
// decode tokens/s at batch 1 and 8 with the cache filled to context 256 or 4096 by a prefill first, for MHA, GQA,
// MQA, MoAS soft and top-1 and MoH 75% and StaticPruning, on 1 and 2 threads; prefill tokens/s beside the eval and
// training forwards' at T = 256. Beside them, in the same run: the machine's read and copy bandwidth on 1 and 2
// threads, and attention of one query per head over a 4096-position cache on its own (internal API), whose K and V
// reads give the cache's achieved bandwidth. tools/bench_decode.py runs this and prints each figure against its bound.
//
// Counters: weight_bytes and cache_bytes (what one sequence's decode step must read, moas_decode_read_bytes, the
// cache at the timed steps' mean length; docs/decoding.md), kv_bytes_per_token (moas_kv_cache_bytes_per_token),
// tokens_per_s.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <string>
#include <vector>

#include "attention/attention.hpp"
#include "moas.h"

namespace {

constexpr int32_t kLayers = 6, kWidth = 384, kVocab = 65;
constexpr int32_t kDecodeSteps = 32;  // timed per iteration, after the prefill

struct Kind {
  const char *name;
  int32_t heads, kv_heads, attention, moas_mode, strategy, shared, routed_k, active;
};

constexpr Kind kKinds[] = {
    {"MHA", 6, 6, MOAS_ATTENTION_SCHEME, 0, 0, 0, 0, 0},
    {"GQA2", 6, 2, MOAS_ATTENTION_SCHEME, 0, 0, 0, 0, 0},
    {"MQA", 6, 1, MOAS_ATTENTION_SCHEME, 0, 0, 0, 0, 0},
    {"MoAS_soft", 6, 6, MOAS_ATTENTION_MOAS, MOAS_MODE_SOFT, 0, 0, 0, 0},
    {"MoAS_top1", 6, 6, MOAS_ATTENTION_MOAS, MOAS_MODE_TOP1, 0, 0, 0, 0},
    {"MoH75", 8, 8, MOAS_ATTENTION_MOH, 0, MOAS_HEADS_MIXTURE, 2, 4, 0},
    {"StaticPruning75", 8, 8, MOAS_ATTENTION_MOH, 0, MOAS_HEADS_STATIC_PRUNING, 0, 0, 6},
};

bool ok(moas_status s, benchmark::State &state) {
  if (s == MOAS_OK) return true;
  state.SkipWithError((std::string(moas_status_string(s)) + ": " + moas_last_error()).c_str());
  return false;
}

moas_model_config config_of(const Kind &k, int32_t context, int32_t threads) {
  moas_model_config c;
  c.struct_size = sizeof c;
  moas_model_config_default(&c);
  c.vocab_size = kVocab;
  c.block_size = context;
  c.n_layer = kLayers;
  c.n_embd = kWidth;
  c.n_head = k.heads;
  c.n_kv_head = k.kv_heads;
  c.attention = k.attention;
  c.n_threads = threads;
  if (k.attention == MOAS_ATTENTION_MOAS) c.moas_mode = k.moas_mode;
  if (k.attention == MOAS_ATTENTION_MOH) {
    c.head_selection.strategy = k.strategy;
    c.head_selection.num_shared_heads = k.shared;
    c.head_selection.num_active_routed_heads = k.routed_k;
    c.head_selection.num_active_heads = k.active;
  }
  return c;
}

std::vector<int32_t> tokens(size_t n, uint32_t seed) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; i++) t[i] = (int32_t)((i * 2654435761u + seed * 40503u) % kVocab);
  return t;
}

// Each iteration: reset, prefill context - kDecodeSteps positions of every sequence (not timed), then kDecodeSteps
// decode steps feeding back the greedy token (timed), so each iteration reads the same cache lengths.
void decode(benchmark::State &state, Kind kind, int32_t batch, int32_t context, int32_t threads) {
  const moas_model_config c = config_of(kind, context, threads);
  moas_model *model = nullptr;
  if (!ok(moas_model_create(&c, &model), state)) return;
  moas_kv_cache *cache = nullptr;
  if (!ok(moas_kv_cache_create(model, batch, context, &cache), state)) {
    moas_model_destroy(model);
    return;
  }
  const int32_t prompt = context - kDecodeSteps;
  const std::vector<int32_t> prefix = tokens((size_t)batch * prompt, 1);
  std::vector<float> logits((size_t)batch * kVocab);
  std::vector<int32_t> next((size_t)batch);
  for (auto _ : state) {
    state.PauseTiming();
    bool fine = ok(moas_kv_cache_reset(cache), state) &&
                ok(moas_prefill(model, cache, prefix.data(), prompt, logits.data(), logits.size()), state);
    state.ResumeTiming();
    for (int32_t s = 0; fine && s < kDecodeSteps; s++) {
      for (int32_t b = 0; b < batch; b++) {
        const float *row = logits.data() + (size_t)b * kVocab;
        next[(size_t)b] = (int32_t)(std::max_element(row, row + kVocab) - row);
      }
      fine = ok(moas_decode_step(model, cache, next.data(), logits.data(), logits.size()), state);
    }
    if (!fine) break;
  }
  // What one sequence's step reads (moas_decode_read_bytes), the cache at the timed steps' mean length.
  uint64_t kv = 0, weights = 0, cached = 0;
  int32_t length = 0;
  moas_kv_cache_bytes_per_token(cache, &kv);
  moas_decode_read_bytes(cache, &weights, &cached);
  moas_kv_cache_length(cache, &length);
  const double mean_length = prompt + (kDecodeSteps - 1) / 2.0;
  state.counters["weight_bytes"] = (double)weights;
  state.counters["cache_bytes"] = length > 0 ? (double)cached / length * mean_length : 0.0;
  state.counters["kv_bytes_per_token"] = (double)kv;
  state.counters["tokens_per_s"] =
      benchmark::Counter((double)state.iterations() * kDecodeSteps * batch, benchmark::Counter::kIsRate);
  moas_kv_cache_destroy(cache);
  moas_model_destroy(model);
}

// Prefill of one 256-token sequence into an empty cache, or the model's forward over the same tokens (eval, or
// training with targets): prefill should run at the forward's matrix-product rate.
enum class Pass { Prefill, EvalForward, TrainForward };

void whole_sequence(benchmark::State &state, Kind kind, Pass pass, int32_t threads) {
  constexpr int32_t T = 256;
  moas_model_config c = config_of(kind, T, threads);
  c.dropout = 0;  // the training forward's matrix products, not its dropout masks
  moas_model *model = nullptr;
  if (!ok(moas_model_create(&c, &model), state)) return;
  moas_kv_cache *cache = nullptr;
  if (pass == Pass::Prefill && !ok(moas_kv_cache_create(model, 1, T, &cache), state)) {
    moas_model_destroy(model);
    return;
  }
  const std::vector<int32_t> in = tokens(T, 2), targets = tokens(T, 3);
  std::vector<float> last(kVocab);
  for (auto _ : state) {
    float loss = 0;
    bool fine = true;
    if (pass == Pass::Prefill)
      fine = ok(moas_kv_cache_reset(cache), state) &&
             ok(moas_prefill(model, cache, in.data(), T, last.data(), last.size()), state);
    else if (pass == Pass::EvalForward)
      fine = ok(moas_forward(model, in.data(), nullptr, 1, T, 0, &loss, nullptr), state);
    else
      fine = ok(moas_forward(model, in.data(), targets.data(), 1, T, 1, &loss, nullptr), state);
    if (!fine) break;
  }
  state.counters["tokens_per_s"] = benchmark::Counter((double)state.iterations() * T, benchmark::Counter::kIsRate);
  moas_kv_cache_destroy(cache);
  moas_model_destroy(model);
}

// Streaming bandwidth over 512 MiB (far beyond any cache): a sum that reads every byte, and memcpy (read + write).
constexpr size_t kStreamFloats = size_t(128) << 20;

void read_bandwidth(benchmark::State &state, int threads) {
  std::vector<float> data(kStreamFloats, 1.0f);
  float total = 0;
  for (auto _ : state) {
    float sum = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sum)
    {
      const size_t t = (size_t)omp_get_thread_num(), nt = (size_t)omp_get_num_threads();
      const size_t begin = kStreamFloats * t / nt / 16 * 16, end = kStreamFloats * (t + 1) / nt / 16 * 16;
      // 16 independent partial sums (a cache line a step) become vector lanes, so the adds keep up with memory.
      float lanes[16] = {};
      for (size_t i = begin; i < end; i += 16)
        for (size_t j = 0; j < 16; j++) lanes[j] += data[i + j];
      for (float lane : lanes) sum += lane;
    }
    total += sum;
  }
  benchmark::DoNotOptimize(total);
  state.counters["GB/s"] = benchmark::Counter((double)state.iterations() * kStreamFloats * 4 / 1e9,
                                              benchmark::Counter::kIsRate);
}

void copy_bandwidth(benchmark::State &state, int threads) {
  std::vector<float> from(kStreamFloats / 2, 1.0f), to(kStreamFloats / 2);
  for (auto _ : state) {
#pragma omp parallel num_threads(threads)
    {
      const size_t n = from.size(), t = (size_t)omp_get_thread_num(), nt = (size_t)omp_get_num_threads();
      std::memcpy(to.data() + n * t / nt, from.data() + n * t / nt, (n * (t + 1) / nt - n * t / nt) * 4);
    }
    benchmark::DoNotOptimize(to.data());
  }
  // Bytes moved as STREAM counts them: read once, written once.
  state.counters["GB/s"] = benchmark::Counter((double)state.iterations() * from.size() * 8 / 1e9,
                                              benchmark::Counter::kIsRate);
}

// One query per head (decode) over a cache of `keys` positions per sequence: H = 6 query heads over Hkv kv heads,
// head_dim 64, the batch's caches far larger than any CPU cache.
void cache_attention(benchmark::State &state, int64_t kv_heads, int64_t batch, int64_t keys, int threads) {
  constexpr int64_t H = 6, d = 64;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  const int64_t kv_width = kv_heads * d;
  std::vector<float> k((size_t)(batch * keys * kv_width)), v(k.size()), q((size_t)(batch * H * d)), out(q.size());
  std::vector<float> lse((size_t)(batch * H));
  for (size_t i = 0; i < k.size(); i++) k[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  for (size_t i = 0; i < v.size(); i++) v[i] = (float)((i * 40503u) % 1000) / 1000.0f - 0.5f;
  for (size_t i = 0; i < q.size(); i++) q[i] = (float)((i * 977u) % 1000) / 1000.0f - 0.5f;
  moas::RowSet rows;
  rows.select(batch, keys, [&](int64_t n) { return n % keys == keys - 1; });  // the last position of each sequence
  std::vector<moas::QueryHead<float>> heads;
  for (int64_t h = 0; h < H; h++)
    heads.push_back({h, &rows, q.data() + h * d, H * d, out.data() + h * d, H * d, lse.data() + h * batch});
  const moas::AttentionDims dims{batch, keys, H, kv_heads, d};
  const moas::KeyValues<float> kvs{k.data(), kv_width, v.data(), kv_width, keys, 0};
  for (auto _ : state) {
    moas::attention_forward(dims, kvs, heads, moas::Dropout{});
    benchmark::DoNotOptimize(out.data());
  }
  omp_set_num_threads(saved);
  state.counters["GB/s"] = benchmark::Counter((double)state.iterations() * 2.0 * k.size() * 4 / 1e9,
                                              benchmark::Counter::kIsRate);
}

const bool registered = [] {
  for (int threads : {1, 2}) {
    benchmark::RegisterBenchmark(("ReadBandwidth/threads" + std::to_string(threads)).c_str(), read_bandwidth,
                                 threads)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("CopyBandwidth/threads" + std::to_string(threads)).c_str(), copy_bandwidth,
                                 threads)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    for (int64_t kv_heads : {6, 2, 1})
      for (int64_t batch : {1, 8})
        benchmark::RegisterBenchmark(("CacheAttention/kv" + std::to_string(kv_heads) + "/batch" +
                                      std::to_string(batch) + "/context4096/threads" + std::to_string(threads))
                                         .c_str(),
                                     cache_attention, kv_heads, batch, 4096, threads)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
  }
  for (const Kind &kind : kKinds)
    for (int32_t threads : {1, 2}) {
      for (int32_t context : {256, 4096})
        for (int32_t batch : {1, 8})
          benchmark::RegisterBenchmark(("Decode/" + std::string(kind.name) + "/batch" + std::to_string(batch) +
                                        "/context" + std::to_string(context) + "/threads" + std::to_string(threads))
                                           .c_str(),
                                       decode, kind, batch, context, threads)
              ->UseRealTime()
              ->Unit(benchmark::kMillisecond);
      const std::pair<const char *, Pass> passes[] = {
          {"Prefill", Pass::Prefill}, {"EvalForward", Pass::EvalForward}, {"TrainForward", Pass::TrainForward}};
      for (const auto &[name, pass] : passes)
        benchmark::RegisterBenchmark((std::string(name) + "/" + kind.name + "/T256/threads" + std::to_string(threads))
                                         .c_str(),
                                     whole_sequence, kind, pass, threads)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
    }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
