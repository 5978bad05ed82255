// `moas generate`: samples text from a checkpoint, one token at a time through a KV cache.
#pragma once

#include <cstdint>
#include <vector>

namespace moas_cli {

// The next token from logits [V]: the argmax at temperature 0, else a draw from softmax(logits / temperature)
// restricted to the top_k largest (all when top_k is 0), using the counter RNG keyed by (seed, index).
int32_t sample_token(const std::vector<float> &logits, double temperature, int top_k, uint64_t seed, uint64_t index);

// Returns the exit code.
int run_generate_command(int argc, char **argv);

}  // namespace moas_cli
