// The CUDA backend on a GPU: training-step throughput of the paper's model (6 layers, 6 heads, 384 wide, T=256,
// B=12, vocab 65, dropout 0.2, AdamW) through the public ABI with device = MOAS_DEVICE_CUDA, for every attention
// kind the CUDA model runs, with fp32, TF32 and BF16 matrix products (matmul_precision); decoding tokens/s of the
// same model through its KV cache, 1 and 8 sequences; and the attention kernels alone (causal, forward + backward,
// fp32 and on bfloat16 tensor cores) at T = 1k .. 16k and head_dim 64 / 128 in TFLOP/s.
// tools/compare_pytorch.py --device cuda runs the same model in PyTorch on the same GPU, and
// tools/bench_attention_cuda.py puts the kernels beside PyTorch's scaled_dot_product_attention (default backend,
// cuDNN and flash forced) at the same shapes. Where no device is usable every benchmark reports why and is skipped.
//
//   build/bench/bench_cuda [--benchmark_filter=TrainStep|Decode|Attention]
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_host/cuda_loader.hpp"
#include "cuda_host/device_array.hpp"
#include "moas.h"

namespace {

struct Variant {
  const char *name;
  int32_t heads, attention, kv_heads, moas_mode, strategy, shared, routed_active, active;
};

// The paper's 6 heads, and 8 heads of 48 for MoH at 75% of the heads (2 shared + 4 of 6 routed, or 6 kept) beside
// AllHeads at the same shape.
const Variant kVariants[] = {
    {"MHA", 6, MOAS_ATTENTION_SCHEME, 6, 0, MOAS_HEADS_ALL, 0, 0, 0},
    {"GQA-2", 6, MOAS_ATTENTION_SCHEME, 2, 0, MOAS_HEADS_ALL, 0, 0, 0},
    {"MQA", 6, MOAS_ATTENTION_SCHEME, 1, 0, MOAS_HEADS_ALL, 0, 0, 0},
    {"MoAS static", 6, MOAS_ATTENTION_MOAS, 6, MOAS_MODE_STATIC, MOAS_HEADS_ALL, 0, 0, 0},
    {"MoAS soft", 6, MOAS_ATTENTION_MOAS, 6, MOAS_MODE_SOFT, MOAS_HEADS_ALL, 0, 0, 0},
    {"MoAS top1", 6, MOAS_ATTENTION_MOAS, 6, MOAS_MODE_TOP1, MOAS_HEADS_ALL, 0, 0, 0},
    {"MoH 2+2/4", 6, MOAS_ATTENTION_MOH, 6, 0, MOAS_HEADS_MIXTURE, 2, 2, 0},
    {"Pruning 4", 6, MOAS_ATTENTION_MOH, 6, 0, MOAS_HEADS_STATIC_PRUNING, 0, 0, 4},
    {"AllHeads H8", 8, MOAS_ATTENTION_MOH, 8, 0, MOAS_HEADS_ALL, 0, 0, 0},
    {"MoH 75% H8", 8, MOAS_ATTENTION_MOH, 8, 0, MOAS_HEADS_MIXTURE, 2, 4, 0},
    {"Pruning 6/8", 8, MOAS_ATTENTION_MOH, 8, 0, MOAS_HEADS_STATIC_PRUNING, 0, 0, 6},
};
const int kVariantCount = (int)(sizeof kVariants / sizeof kVariants[0]);

moas_model_config paper_config_on_gpu(const Variant &v, int32_t matmul_precision = MOAS_MATMUL_FP32) {
  moas_model_config cfg;
  cfg.struct_size = sizeof cfg;
  moas_model_config_default(&cfg);
  cfg.device = MOAS_DEVICE_CUDA;
  cfg.matmul_precision = matmul_precision;
  cfg.n_head = v.heads;
  cfg.attention = v.attention;
  cfg.n_kv_head = v.attention == MOAS_ATTENTION_MOAS ? cfg.n_head : v.kv_heads;
  if (v.attention == MOAS_ATTENTION_MOAS) cfg.moas_mode = v.moas_mode;
  cfg.head_selection.strategy = v.strategy;
  cfg.head_selection.num_shared_heads = v.shared;
  cfg.head_selection.num_active_routed_heads = v.routed_active;
  cfg.head_selection.num_active_heads = v.active;
  return cfg;
}

void BM_TrainStep(benchmark::State &state) {
  const Variant &v = kVariants[state.range(0)];
  const int32_t B = 12, T = 256, precision = (int32_t)state.range(1);
  const moas_model_config cfg = paper_config_on_gpu(v, precision);
  state.SetLabel(std::string(v.name) + (precision == MOAS_MATMUL_TF32   ? ", TF32"
                                        : precision == MOAS_MATMUL_BF16 ? ", BF16"
                                                                         : ""));
  moas_model *model = nullptr;
  if (moas_model_create(&cfg, &model) != MOAS_OK) {
    state.SkipWithError(moas_last_error());
    return;
  }
  moas_adamw_config adamw;
  adamw.struct_size = sizeof adamw;
  moas_adamw_config_default(&adamw);
  std::vector<int32_t> tokens((size_t)(B * T)), targets((size_t)(B * T));
  for (size_t i = 0; i < tokens.size(); i++) {
    tokens[i] = (int32_t)((i * 7919) % 65);
    targets[i] = (int32_t)((i * 104729 + 3) % 65);
  }
  // The loss comes back to the host and the optimiser step synchronises: each iteration is a whole step.
  for (auto _ : state) {
    moas_zero_grad(model);
    if (moas_forward(model, tokens.data(), targets.data(), B, T, 1, nullptr, nullptr) != MOAS_OK ||
        moas_backward(model) != MOAS_OK || moas_optimizer_step(model, &adamw, nullptr) != MOAS_OK) {
      state.SkipWithError(moas_last_error());
      break;
    }
  }
  moas_model_destroy(model);
  state.counters["tok/s"] =
      benchmark::Counter((double)(B * T) * (double)state.iterations(), benchmark::Counter::kIsRate);
}

// Every sequence starts over with the prompt [batch, prompt_len]; the last position's logits land in `logits`.
bool prefill_prompt(moas_model *model, moas_kv_cache *cache, const std::vector<int32_t> &prompt, int32_t prompt_len,
                    std::vector<float> &logits) {
  return moas_kv_cache_reset(cache) == MOAS_OK &&
         moas_prefill(model, cache, prompt.data(), prompt_len, logits.data(), logits.size()) == MOAS_OK;
}

// Greedy rather than sampled, since sampling is not what is measured; but each token still comes from the previous
// step's logits, so every step waits for the one before it, as in a real decoder.
bool decode_greedy(moas_model *model, moas_kv_cache *cache, int32_t steps, int32_t vocab, std::vector<float> &logits,
                   std::vector<int32_t> &next) {
  for (int32_t s = 0; s < steps; s++) {
    for (size_t b = 0; b < next.size(); b++) {
      const float *row = logits.data() + b * (size_t)vocab;
      next[b] = (int32_t)(std::max_element(row, row + vocab) - row);
    }
    if (moas_decode_step(model, cache, next.data(), logits.data(), logits.size()) != MOAS_OK) return false;
  }
  return true;
}

// KV-cache decoding of the paper's model: each iteration prefills a 64-token prompt per sequence (not timed, it is
// not decoding) and then decodes one token per step up to the full context, so every iteration covers the same
// cache lengths. tok/s counts the decoded tokens of all sequences.
void BM_Decode(benchmark::State &state) {
  const Variant &v = kVariants[state.range(0)];
  const int32_t batch = (int32_t)state.range(1), prompt_len = 64;
  const moas_model_config cfg = paper_config_on_gpu(v);
  const int32_t steps = cfg.block_size - prompt_len;
  state.SetLabel(v.name);
  moas_model *model = nullptr;
  moas_kv_cache *cache = nullptr;
  if (moas_model_create(&cfg, &model) != MOAS_OK ||
      moas_kv_cache_create(model, batch, cfg.block_size, &cache) != MOAS_OK) {
    state.SkipWithError(moas_last_error());
    moas_model_destroy(model);
    return;
  }
  std::vector<int32_t> prompt((size_t)(batch * prompt_len)), next((size_t)batch);
  for (size_t i = 0; i < prompt.size(); i++) prompt[i] = (int32_t)((i * 7919) % (size_t)cfg.vocab_size);
  std::vector<float> logits((size_t)(batch * cfg.vocab_size));
  for (auto _ : state) {
    state.PauseTiming();
    const bool prefilled = prefill_prompt(model, cache, prompt, prompt_len, logits);
    state.ResumeTiming();
    if (!prefilled || !decode_greedy(model, cache, steps, cfg.vocab_size, logits, next)) {
      state.SkipWithError(moas_last_error());
      break;
    }
  }
  moas_kv_cache_destroy(cache);
  moas_model_destroy(model);
  state.counters["tok/s"] =
      benchmark::Counter((double)(batch * steps) * (double)state.iterations(), benchmark::Counter::kIsRate);
}

// Dense causal attention, B sequences of T positions, H = 8 heads of d (MHA): forward and backward through the
// backend table on device buffers, in fp32 (matmul precision FP32) or on bfloat16 tensor cores (BF16). FLOPs
// counted causally: forward 2 products of T^2 / 2 * d per head, backward 5.
void BM_Attention(benchmark::State &state) {
  const int64_t T = state.range(0), d = state.range(1), H = 8, B = T >= 8192 ? 1 : 16384 / T, N = B * T;
  const int32_t precision = (int32_t)state.range(2);
  state.SetLabel(precision == MOAS_MATMUL_BF16 ? "bf16 tensor cores" : "fp32");
  const moas::CudaBackend &backend = moas::cuda_backend();
  if (!backend.table || backend.devices == 0) {
    state.SkipWithError(backend.why.c_str());
    return;
  }
  const moas_cuda_backend &t = *backend.table;
  if (t.set_matmul_precision(precision) != 0) {
    state.SkipWithError(t.last_error());
    return;
  }
  moas::DeviceArray<float> q, k, v, out, lse, dout, dq, dk, dv;
  for (moas::DeviceArray<float> *a : {&q, &k, &v, &out, &dout, &dq, &dk, &dv}) {
    a->reserve(t, N * H * d);
    a->zero(N * H * d);
  }
  lse.reserve(t, H * N);
  std::vector<int32_t> pos((size_t)N);
  std::vector<int64_t> begin((size_t)B + 1);
  for (int64_t n = 0; n < N; n++) pos[(size_t)n] = (int32_t)(n % T);
  for (int64_t b = 0; b <= B; b++) begin[(size_t)b] = b * T;
  moas::DeviceArray<int32_t> pos_d;
  moas::DeviceArray<int64_t> begin_d;
  pos_d.upload(t, pos.data(), N);
  begin_d.upload(t, begin.data(), B + 1);
  std::vector<moas_cuda_query_head> heads;
  std::vector<moas_cuda_query_head_grad> grads;
  for (int64_t h = 0; h < H; h++) {
    heads.push_back({h, pos_d.get(), begin_d.get(), q.get() + h * d, H * d, out.get() + h * d, H * d,
                     lse.get() + h * N});
    grads.push_back({dout.get() + h * d, H * d, dq.get() + h * d, H * d});
  }
  moas::DeviceArray<moas_cuda_query_head> heads_d;
  moas::DeviceArray<moas_cuda_query_head_grad> grads_d;
  heads_d.upload(t, heads.data(), H);
  grads_d.upload(t, grads.data(), H);
  const moas_cuda_attention_dims dims{B, T, H, H, d, 0};
  const moas_cuda_key_values kv{k.get(), H * d, v.get(), H * d, T, 0};
  const moas_cuda_key_value_grads dkv{dk.get(), H * d, dv.get(), H * d};
  for (auto _ : state) {
    if (t.attention_forward(&dims, &kv, heads_d.get(), H, nullptr, nullptr) != 0 ||
        t.attention_backward(&dims, &kv, heads_d.get(), grads_d.get(), H, &dkv, nullptr, nullptr) != 0 ||
        t.synchronize(nullptr) != 0) {
      state.SkipWithError(t.last_error());
      break;
    }
  }
  t.set_matmul_precision(MOAS_MATMUL_FP32);
  const double causal_pairs = (double)B * (double)H * (double)T * (double)(T + 1) / 2;
  const double flops = 2.0 * (2 + 5) * causal_pairs * (double)d * (double)state.iterations();
  state.counters["TFLOP/s"] = benchmark::Counter(flops / 1e12, benchmark::Counter::kIsRate);
  state.counters["B"] = (double)B;
}

}  // namespace

BENCHMARK(BM_TrainStep)
    ->ArgsProduct({benchmark::CreateDenseRange(0, kVariantCount - 1, 1),
                   {MOAS_MATMUL_FP32, MOAS_MATMUL_TF32, MOAS_MATMUL_BF16}})
    ->ArgNames({"variant", "matmul"})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);
BENCHMARK(BM_Decode)->ArgsProduct({benchmark::CreateDenseRange(0, kVariantCount - 1, 1), {1, 8}})
    ->ArgNames({"variant", "batch"})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Attention)
    ->ArgsProduct({{1024, 2048, 4096, 8192, 16384}, {64, 128}, {MOAS_MATMUL_FP32, MOAS_MATMUL_BF16}})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char **argv) {
  // The backend built beside this benchmark, unless the caller chose one.
  setenv("MOAS_CUDA_LIBRARY", MOAS_BENCH_LIBMOAS_CUDA, 0);
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("libmoas", moas_build_info());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
