// `moas generate`: samples text from a checkpoint, one token at a time through a KV cache. The sampling itself
// (sample_token, sample_continuation) also serves `moas train --sample-every`, and open_checkpoint `moas eval`.
#pragma once

#include <moas.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dataset.hpp"
#include "handles.hpp"

namespace moas_cli {

struct SamplingSettings {
  double temperature = 0.8;  // 0: the most likely token
  int top_k = 0;             // 0: all tokens
  double top_p = 1.0;        // in (0, 1]; 1: all tokens
  uint64_t seed = 1337;
};

// The next token from logits [V]: the argmax at temperature 0, else a draw from softmax(logits / temperature)
// restricted to the top_k largest (all when top_k is 0), then to the smallest set of those, most likely first,
// whose probability reaches top_p; using the counter RNG keyed by (seed, index).
int32_t sample_token(const std::vector<float> &logits, const SamplingSettings &settings, uint64_t index);

// The token a sample starts from when there is no prompt: a newline (a line start in text) when the vocabulary
// has one, else token 0.
int32_t start_token(const Vocabulary &vocabulary);

struct ContinuationStats {
  uint64_t kv_bytes_per_token = 0;
  int capacity = 0;  // the cache's positions: the model's block
  int refills = 0;   // times the full cache restarted from the last half block
  // The decode steps (not the prefills): their count, time, and the bytes they had to read (moas_decode_read_bytes).
  long decode_steps = 0;
  double decode_seconds = 0, decode_bytes = 0;
};

// Appends `count` tokens sampled from `model` to sequence (which must not be empty), calling on_token with each as
// it is drawn. Decodes through a KV cache of the model's block; when it is full, it restarts from the last half
// block, so the model sees a long context at every step without recomputing it for every token. Evaluation mode:
// a model being trained can sample between steps.
ContinuationStats sample_continuation(moas_model *model, std::vector<int32_t> &sequence, int count,
                                      const SamplingSettings &settings, const std::function<void(int32_t)> &on_token);

// A checkpoint written by moas train, loaded for inference.
struct OpenedCheckpoint {
  std::string path;  // the weights file
  Vocabulary vocabulary;
  ModelPtr model;
  moas_model_config config;
};

// Opens a run directory (its latest weights) or a weights file; RuntimeFailure when there is none or its metadata
// is damaged.
OpenedCheckpoint open_checkpoint(const std::string &run_or_file, int threads, bool cuda);

// Returns the exit code.
int run_generate_command(int argc, char **argv);

}  // namespace moas_cli
