#include "generate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <optional>
#include <string>

#include "checkpoint.hpp"
#include "counter_rng.hpp"
#include "dataset.hpp"
#include "errors.hpp"
#include "generate_flags.hpp"
#include "handles.hpp"

namespace moas_cli {

int32_t sample_token(const std::vector<float> &logits, double temperature, int top_k, uint64_t seed,
                     uint64_t index) {
  const int32_t vocab = (int32_t)logits.size();
  if (temperature == 0) return (int32_t)(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> order((size_t)vocab);
  std::iota(order.begin(), order.end(), 0);
  const int32_t kept = top_k > 0 && top_k < vocab ? top_k : vocab;
  // Largest first; equal logits keep the lower id first, so the draw does not depend on the sort.
  std::partial_sort(order.begin(), order.begin() + kept, order.end(), [&](int32_t a, int32_t b) {
    return logits[(size_t)a] > logits[(size_t)b] || (logits[(size_t)a] == logits[(size_t)b] && a < b);
  });
  std::vector<double> weights((size_t)kept);
  const double top = logits[(size_t)order[0]];
  double total = 0;
  for (int32_t i = 0; i < kept; i++) {
    weights[(size_t)i] = std::exp((logits[(size_t)order[(size_t)i]] - top) / temperature);
    total += weights[(size_t)i];
  }
  double u = counter_uniform(seed, kStreamSampling, index, 0) * total;
  for (int32_t i = 0; i < kept; i++) {
    u -= weights[(size_t)i];
    if (u < 0) return order[(size_t)i];
  }
  return order[(size_t)kept - 1];
}

int run_generate_command(int argc, char **argv) {
  GenerateOptions o;
  if (!parse_generate_arguments(argc, argv, &o)) {
    std::fputs(generate_usage().c_str(), stdout);
    return 0;
  }
  std::error_code ec;
  std::string path = o.checkpoint;
  if (std::filesystem::is_directory(path, ec)) {
    // The run's latest pair, not DIR/model.safetensors: a kill can come between the switch and the link.
    const std::optional<CheckpointPair> latest = latest_checkpoint(RunFiles(path));
    path = latest ? latest->model : path + "/model.safetensors";
  }
  if (!std::filesystem::exists(path, ec))
    throw RuntimeFailure("no checkpoint at " + path + ": pass --checkpoint DIR, the --out of moas train");
  const nlohmann::json metadata = read_checkpoint_metadata(path);
  const Vocabulary vocabulary = Vocabulary::from_json(metadata["vocabulary"]);
  std::vector<int32_t> sequence = vocabulary.encode(o.prompt);

  moas_model_config overrides;
  overrides.struct_size = sizeof overrides;
  check_status(moas_model_config_default(&overrides), "moas_model_config_default");
  overrides.n_threads = o.threads;
  overrides.device = o.cuda ? MOAS_DEVICE_CUDA : MOAS_DEVICE_CPU;
  moas_model *raw = nullptr;
  check_status(moas_model_create_from_file(path.c_str(), &overrides, &raw), "loading " + path);
  const ModelPtr model(raw);
  moas_model_config config;
  config.struct_size = sizeof config;
  check_status(moas_model_get_config(model.get(), &config), "moas_model_get_config");
  if (config.vocab_size != vocabulary.size())
    throw RuntimeFailure(path + " has " + std::to_string(config.vocab_size) + " outputs but a vocabulary of " +
                         std::to_string(vocabulary.size()) + ": the checkpoint's metadata is damaged");

  std::string shown_prompt = o.prompt;
  if (sequence.empty()) {
    // No prompt: start from a newline when the vocabulary has one (a line start in text), else from token 0.
    const int32_t newline = vocabulary.is_bytes() ? '\n' : vocabulary.id_of(U'\n');
    sequence = {newline >= 0 ? newline : 0};
    shown_prompt = vocabulary.decode(sequence[0]);
  }

  const int capacity = config.block_size;
  const KvCachePtr cache = create_kv_cache(model.get(), capacity);
  uint64_t bytes_per_token = 0;
  check_status(moas_kv_cache_bytes_per_token(cache.get(), &bytes_per_token), "moas_kv_cache_bytes_per_token");
  std::vector<float> logits((size_t)config.vocab_size);
  int refills = 0;
  // When the cache is full, start it again from the last half block: the model then sees a long context at
  // every step without recomputing it for every token.
  auto prefill_tail = [&](size_t keep) {
    check_status(moas_kv_cache_reset(cache.get()), "moas_kv_cache_reset");
    const size_t n = std::min(keep, sequence.size());
    check_status(moas_prefill(model.get(), cache.get(), sequence.data() + (sequence.size() - n), (int32_t)n,
                              logits.data(), logits.size()),
                 "moas_prefill");
  };

  std::fputs(shown_prompt.c_str(), stdout);
  const auto start = std::chrono::steady_clock::now();
  prefill_tail(sequence.size() <= (size_t)capacity ? sequence.size() : (size_t)std::max(1, capacity / 2));
  for (int i = 0; i < o.tokens; i++) {
    const int32_t next = sample_token(logits, o.temperature, o.top_k, o.seed, (uint64_t)i);
    sequence.push_back(next);
    std::fputs(vocabulary.decode(next).c_str(), stdout);
    if (i + 1 == o.tokens) break;
    int32_t cached = 0;
    check_status(moas_kv_cache_length(cache.get(), &cached), "moas_kv_cache_length");
    if (cached >= capacity) {
      prefill_tail((size_t)std::max(1, capacity / 2));
      refills++;
    } else {
      check_status(moas_decode_step(model.get(), cache.get(), &next, logits.data(), logits.size()),
                   "moas_decode_step");
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fputs("\n", stdout);
  std::fflush(stdout);
  std::fprintf(stderr,
               "generated %d tokens in %.2f s (%.0f tokens/s); KV cache %llu bytes per token, capacity %d positions, "
               "refilled %d times\n",
               o.tokens, seconds, o.tokens / std::max(seconds, 1e-9), (unsigned long long)bytes_per_token, capacity,
               refills);
  return 0;
}

}  // namespace moas_cli
