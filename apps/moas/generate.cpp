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

#include "bandwidth.hpp"
#include "checkpoint.hpp"
#include "counter_rng.hpp"
#include "errors.hpp"
#include "generate_flags.hpp"

namespace moas_cli {

int32_t sample_token(const std::vector<float> &logits, const SamplingSettings &settings, uint64_t index) {
  const int32_t vocab = (int32_t)logits.size();
  if (settings.temperature == 0)
    return (int32_t)(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> order((size_t)vocab);
  std::iota(order.begin(), order.end(), 0);
  const int32_t top_k = settings.top_k > 0 && settings.top_k < vocab ? settings.top_k : vocab;
  // Largest first; equal logits keep the lower id first, so the draw does not depend on the sort.
  std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&](int32_t a, int32_t b) {
    return logits[(size_t)a] > logits[(size_t)b] || (logits[(size_t)a] == logits[(size_t)b] && a < b);
  });
  std::vector<double> weights((size_t)top_k);
  const double top = logits[(size_t)order[0]];
  double total = 0;
  for (int32_t i = 0; i < top_k; i++) {
    weights[(size_t)i] = std::exp((logits[(size_t)order[(size_t)i]] - top) / settings.temperature);
    total += weights[(size_t)i];
  }
  int32_t kept = top_k;
  if (settings.top_p < 1) {
    // The nucleus: the fewest most likely tokens whose probability reaches top_p (at least the most likely one).
    double mass = 0;
    for (kept = 0; kept < top_k && mass < settings.top_p * total; kept++) mass += weights[(size_t)kept];
    total = mass;
  }
  double u = counter_uniform(settings.seed, kStreamSampling, index, 0) * total;
  for (int32_t i = 0; i < kept; i++) {
    u -= weights[(size_t)i];
    if (u < 0) return order[(size_t)i];
  }
  return order[(size_t)kept - 1];
}

int32_t start_token(const Vocabulary &vocabulary) {
  const int32_t newline = vocabulary.is_bytes() ? '\n' : vocabulary.id_of(U'\n');
  return newline >= 0 ? newline : 0;
}

ContinuationStats sample_continuation(moas_model *model, std::vector<int32_t> &sequence, int count,
                                      const SamplingSettings &settings, const std::function<void(int32_t)> &on_token) {
  moas_model_config config;
  config.struct_size = sizeof config;
  check_status(moas_model_get_config(model, &config), "moas_model_get_config");
  ContinuationStats stats;
  stats.capacity = config.block_size;
  const KvCachePtr cache = create_kv_cache(model, stats.capacity);
  check_status(moas_kv_cache_bytes_per_token(cache.get(), &stats.kv_bytes_per_token), "moas_kv_cache_bytes_per_token");
  std::vector<float> logits((size_t)config.vocab_size);
  auto prefill_tail = [&](size_t keep) {
    check_status(moas_kv_cache_reset(cache.get()), "moas_kv_cache_reset");
    const size_t n = std::min(keep, sequence.size());
    check_status(moas_prefill(model, cache.get(), sequence.data() + (sequence.size() - n), (int32_t)n, logits.data(),
                              logits.size()),
                 "moas_prefill");
  };
  const size_t half_block = (size_t)std::max(1, stats.capacity / 2);
  prefill_tail(sequence.size() <= (size_t)stats.capacity ? sequence.size() : half_block);
  for (int i = 0; i < count; i++) {
    const int32_t next = sample_token(logits, settings, (uint64_t)i);
    sequence.push_back(next);
    on_token(next);
    if (i + 1 == count) break;
    int32_t cached = 0;
    check_status(moas_kv_cache_length(cache.get(), &cached), "moas_kv_cache_length");
    if (cached >= stats.capacity) {
      prefill_tail(half_block);
      stats.refills++;
    } else {
      uint64_t weight_bytes = 0, cache_bytes = 0;
      check_status(moas_decode_read_bytes(cache.get(), &weight_bytes, &cache_bytes), "moas_decode_read_bytes");
      const auto start = std::chrono::steady_clock::now();
      check_status(moas_decode_step(model, cache.get(), &next, logits.data(), logits.size()), "moas_decode_step");
      stats.decode_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      stats.decode_bytes += (double)(weight_bytes + cache_bytes);
      stats.decode_steps++;
    }
  }
  return stats;
}

OpenedCheckpoint open_checkpoint(const std::string &run_or_file, int threads, bool cuda) {
  std::error_code ec;
  std::string path = run_or_file;
  if (std::filesystem::is_directory(path, ec)) {
    // The run's latest pair, not DIR/model.safetensors: a kill can come between the switch and the link.
    const std::optional<CheckpointPair> latest = latest_checkpoint(RunFiles(path));
    path = latest ? latest->model : path + "/model.safetensors";
  }
  if (!std::filesystem::exists(path, ec))
    throw RuntimeFailure("no checkpoint at " + path + ": pass --checkpoint DIR, the --out of moas train");
  const nlohmann::json metadata = read_checkpoint_metadata(path);
  Vocabulary vocabulary = Vocabulary::from_json(metadata["vocabulary"]);

  moas_model_config overrides;
  overrides.struct_size = sizeof overrides;
  check_status(moas_model_config_default(&overrides), "moas_model_config_default");
  overrides.n_threads = threads;
  overrides.device = cuda ? MOAS_DEVICE_CUDA : MOAS_DEVICE_CPU;
  moas_model *raw = nullptr;
  check_status(moas_model_create_from_file(path.c_str(), &overrides, &raw), "loading " + path);
  ModelPtr model(raw);
  moas_model_config config;
  config.struct_size = sizeof config;
  check_status(moas_model_get_config(model.get(), &config), "moas_model_get_config");
  if (config.vocab_size != vocabulary.size())
    throw RuntimeFailure(path + " has " + std::to_string(config.vocab_size) + " outputs but a vocabulary of " +
                         std::to_string(vocabulary.size()) + ": the checkpoint's metadata is damaged");
  return {path, std::move(vocabulary), std::move(model), config};
}


int run_generate_command(int argc, char **argv) {
  GenerateOptions o;
  if (!parse_generate_arguments(argc, argv, &o)) {
    std::fputs(generate_usage().c_str(), stdout);
    return 0;
  }
  const std::string prompt =
      o.prompt_file.empty() ? o.prompt : read_text_file("--prompt-file", o.prompt_file, /*allow_empty=*/true);
  const OpenedCheckpoint checkpoint = open_checkpoint(o.checkpoint, o.threads, o.cuda);
  std::vector<int32_t> prompt_tokens = checkpoint.vocabulary.encode(prompt);
  std::string shown_prompt = prompt;
  if (prompt_tokens.empty()) {
    prompt_tokens = {start_token(checkpoint.vocabulary)};
    shown_prompt = checkpoint.vocabulary.decode(prompt_tokens[0]);
  }

  ContinuationStats stats;
  const auto start = std::chrono::steady_clock::now();
  for (int sample = 0; sample < o.num_samples; sample++) {
    SamplingSettings settings = o.sampling;
    settings.seed += (uint64_t)sample;
    // Samples are told apart by a line of their own; a single sample prints only its text.
    if (o.num_samples > 1)
      std::printf("%s=== sample %d of %d (seed %llu) ===\n", sample ? "\n" : "", sample + 1, o.num_samples,
                  (unsigned long long)settings.seed);
    std::fputs(shown_prompt.c_str(), stdout);
    std::vector<int32_t> sequence = prompt_tokens;
    const ContinuationStats one = sample_continuation(
        checkpoint.model.get(), sequence, o.tokens, settings,
        [&](int32_t token) { std::fputs(checkpoint.vocabulary.decode(token).c_str(), stdout); });
    stats.kv_bytes_per_token = one.kv_bytes_per_token;
    stats.capacity = one.capacity;
    stats.refills += one.refills;
    stats.decode_steps += one.decode_steps;
    stats.decode_seconds += one.decode_seconds;
    stats.decode_bytes += one.decode_bytes;
    std::fputs("\n", stdout);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fflush(stdout);
  const long long generated = (long long)o.tokens * o.num_samples;
  std::fprintf(stderr,
               "generated %lld tokens in %.2f s (%.0f tokens/s); KV cache %llu bytes per token, capacity %d positions, "
               "refilled %d times\n",
               generated, seconds, generated / std::max(seconds, 1e-9), (unsigned long long)stats.kv_bytes_per_token,
               stats.capacity, stats.refills);
  if (stats.decode_steps > 0 && !o.cuda) {
    // A decode step of one sequence is bound by the bytes it must read: the fraction of the machine's read bandwidth
    // it reached says how close to that bound it ran.
    const double rate = stats.decode_bytes / std::max(stats.decode_seconds, 1e-9);
    const double bandwidth = read_bandwidth(effective_threads(checkpoint.config.n_threads));
    std::fprintf(stderr,
                 "decode steps: %.0f tokens/s, each reading %.1f MB (weights and KV cache) at %.1f GB/s: %.0f%% of "
                 "this machine's read bandwidth (%.1f GB/s, measured now)\n",
                 (double)stats.decode_steps / std::max(stats.decode_seconds, 1e-9),
                 stats.decode_bytes / (double)stats.decode_steps / 1e6, rate / 1e9, 100 * rate / bandwidth,
                 bandwidth / 1e9);
  }
  return 0;
}

}  // namespace moas_cli
