// Token + learned position embeddings on the GPU (the CUDA twin of src/ops/embedding.hpp), forward and backward.
// forward:        one block per token row, threads over the columns.
// backward (wte): one block per (band of kVocabBand vocabulary rows, band of kEmbeddingThreads columns); each walks
//                 every token in order and adds the rows of the tokens in its band, so each gradient element sums its
//                 tokens in token order, as the CPU does: no atomics, the CPU's bits.
// backward (wpe): one block per position, each element summed over the sequences in order.
#pragma once

#include <cstdint>

#include "block.cuh"

namespace moas {
namespace cuda {

constexpr int kEmbeddingThreads = 128;
constexpr int64_t kVocabBand = 64;
using EmbeddingDeviceBlock = DeviceBlock<kEmbeddingThreads>;
using EmbeddingHostBlock = HostBlock<kEmbeddingThreads>;

struct EmbeddingArgs {
  float *out;              // forward: [B*T, C]
  float *dwte, *dwpe;      // backward: [V, C], [T, C] (dwpe may be null)
  const float *dout;       // backward: [B*T, C]
  const int32_t *tokens;   // [B*T]
  const float *wte, *wpe;  // forward (wpe may be null)
  int64_t B, T, C, V, past;
};

inline Grid embedding_forward_grid(const EmbeddingArgs &a) { return {a.B * a.T, 1, 1}; }
inline Grid embedding_backward_wte_grid(const EmbeddingArgs &a) {
  return {ceil_div(a.V, kVocabBand), ceil_div(a.C, kEmbeddingThreads), 1};
}
inline Grid embedding_backward_wpe_grid(const EmbeddingArgs &a) { return {a.dwpe ? a.T : 0, 1, 1}; }
inline size_t embedding_backward_shared_bytes() {
  SharedArena arena{nullptr};
  arena.take<int32_t>(kEmbeddingThreads);
  return arena.used;
}

template <class Block>
MOAS_HD void embedding_forward_block(const Block &block, const EmbeddingArgs &a, int64_t n) {
  constexpr int T = Block::kThreads;
  const float *tok = a.wte + (int64_t)a.tokens[n] * a.C;
  const float *pos = a.wpe ? a.wpe + (a.past + n % a.T) * a.C : nullptr;
  float *o = a.out + n * a.C;
  block.each([&](int t) {
    for (int64_t c = t; c < a.C; c += T) o[c] = pos ? tok[c] + pos[c] : tok[c];
  });
}

template <class Block>
MOAS_HD void embedding_backward_wte_block(const Block &block, const EmbeddingArgs &a, unsigned char *shared,
                                          int64_t band, int64_t column_band) {
  constexpr int T = Block::kThreads;
  SharedArena arena{shared};
  int32_t *chunk = arena.take<int32_t>(T);  // the tokens of the chunk being walked
  const int64_t v0 = band * kVocabBand, v1 = min_i64(a.V, v0 + kVocabBand), N = a.B * a.T;
  for (int64_t n0 = 0; n0 < N; n0 += T) {
    const int64_t count = min_i64(T, N - n0);
    block.each([&](int t) {
      if (t < count) chunk[t] = a.tokens[n0 + t];
    });
    block.each([&](int t) {
      const int64_t c = column_band * T + t;
      if (c >= a.C) return;
      for (int64_t i = 0; i < count; ++i)
        if (chunk[i] >= v0 && chunk[i] < v1) a.dwte[(int64_t)chunk[i] * a.C + c] += a.dout[(n0 + i) * a.C + c];
    });
  }
}

template <class Block>
MOAS_HD void embedding_backward_wpe_block(const Block &block, const EmbeddingArgs &a, int64_t position) {
  constexpr int T = Block::kThreads;
  block.each([&](int t) {
    for (int64_t c = t; c < a.C; c += T) {
      float *d = a.dwpe + position * a.C + c;
      for (int64_t b = 0; b < a.B; ++b) *d += a.dout[(b * a.T + position) * a.C + c];
    }
  });
}

// Launchers (embedding.cu); the table's embedding_forward and embedding_backward.
int32_t embedding_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe, int64_t B, int64_t T,
                          int64_t C, int64_t past, void *stream);
int32_t embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int64_t B, int64_t T,
                           int64_t C, int64_t V, void *stream);

}  // namespace cuda
}  // namespace moas
