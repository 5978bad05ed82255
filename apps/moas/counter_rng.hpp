// Counter-based random numbers: the value at (seed, stream, index, lane) needs no state, so a resumed run draws
// exactly the batches it would have drawn, whatever happened before it.
#pragma once

#include <cstdint>

namespace moas_cli {

// What the numbers are for: each purpose gets its own stream, so adding draws to one never shifts another.
enum RandomStream : uint64_t {
  kStreamTask = 1,        // the generated recall/copy text
  kStreamTrainBatch = 2,  // training windows, indexed by step
  kStreamValBatch = 3,    // validation windows, indexed by eval batch (the same every evaluation)
  kStreamSampling = 4     // `moas generate`, indexed by generated token
};

// The SplitMix64 finaliser: a bijection whose output bits each depend on every input bit.
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

inline uint64_t counter_random(uint64_t seed, uint64_t stream, uint64_t index, uint64_t lane) {
  uint64_t h = mix64(seed + 0x9E3779B97F4A7C15ull);
  h = mix64(h ^ (stream * 0xD1B54A32D192ED03ull));
  h = mix64(h ^ (index * 0xAEF17502108EF2D9ull));
  return mix64(h ^ (lane + 0x632BE59BD9B4E019ull));
}

// Uniform in [0, 1) with 53 random bits.
inline double counter_uniform(uint64_t seed, uint64_t stream, uint64_t index, uint64_t lane) {
  return (double)(counter_random(seed, stream, index, lane) >> 11) * 0x1.0p-53;
}

}  // namespace moas_cli
