// The GPT decoder of SPEC §1–2: tokens → embeddings → blocks (norm → attention → residual, norm → MLP → residual)
// → final norm → tied LM head → cross-entropy. Templated on the scalar so tests can check gradients in double.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "attention/attention_block.hpp"
#include "attention/kv_cache.hpp"
#include "config/config.hpp"
#include "ops/adamw.hpp"
#include "ops/decode_weights.hpp"
#include "ops/params.hpp"
#include "ops/rope.hpp"
#include "ops/rows.hpp"

namespace moas {

template <typename T>
class Model {
 public:
  explicit Model(const ModelConfig &config);
  // The names and shapes of `config`'s parameters, allocating none: a checkpoint is checked against them before a
  // model is built for it.
  static std::vector<ParamInfo> parameter_infos(const ModelConfig &config);

  const ModelConfig &config() const { return config_; }

  // tokens/targets [B, Tn], already validated by the caller. Returns the mean CE (0 without targets).
  // training keeps activations for backward and draws dropout masks for this forward.
  // With a cache (eval only), the tokens continue the cached sequences at position cache->length, their keys and
  // values are appended to it, and cache->length grows by Tn.
  double forward(const int32_t *tokens, const int32_t *targets, int64_t B, int64_t Tn, bool training,
                 KvCache<T> *cache = nullptr);
  // Sizes a cache for this model's blocks: `batch` sequences of up to `capacity` positions (with a window, buffers
  // of only the rows the window needs).
  void allocate_cache(KvCache<T> *cache, int64_t batch, int64_t capacity) const;
  // Per layer, the width of each cache slot (AttentionBlock::cache_widths): a CUDA model's cache takes the same.
  std::vector<std::vector<int64_t>> cache_widths() const;
  // Accumulates d(CE + lambda * aux)/d(params) of the last training forward into params.grads.
  void backward();
  bool can_backward() const { return backward_ready_; }
  // After weights change under them, the kept activations no longer belong to the parameters.
  void invalidate_activations() { backward_ready_ = false; }
  // Every change of params.values must be followed by this: it also drops the weights packed for decoding.
  void parameters_changed() {
    invalidate_activations();
    decode_weights_.clear();
  }

  // The unweighted load-balance loss of the last training forward, mean over the routed layers (0 after an eval
  // forward or without routing).
  double aux_loss() const { return aux_; }
  // Router statistics of `layer` from the last forward; false when that layer routes nothing.
  bool router_stats(int64_t layer, RouterStats *out) const { return attn_[(size_t)layer]->router_stats(out); }
  // The per-token gates of `layer` from the last forward (see AttentionBlock::gates).
  std::vector<T> gates(int64_t layer, int64_t *width) const { return attn_[(size_t)layer]->gates(width); }
  const std::vector<T> &logits() const { return logits_; }  // [B*Tn, V] of the last forward
  int64_t last_batch() const { return B_; }
  int64_t last_seq() const { return Tn_; }

  ParamTable<T> params;
  AdamWState<T> optimizer;
  uint64_t training_forwards = 0;  // keys the dropout masks; saved with the optimizer state

 private:
  struct ShapesOnly {};
  Model(const ModelConfig &config, ShapesOnly) : config_(config) { register_parameters(); }

  struct LayerParams {  // offsets into params; -1 where the config has no such tensor (attention: attn_)
    int64_t ln1_w, ln1_b, ln2_w, ln2_b, fc_w, fc_b, mproj_w, mproj_b;
  };
  struct LayerActivations {
    std::vector<T> ln1, ln1_mean, ln1_rstd;  // [N, C], [N], [N]
    std::vector<T> mid;                      // residual stream after attention [N, C]
    std::vector<T> ln2, ln2_mean, ln2_rstd;
    std::vector<T> fc_pre, fc_act;           // [N, F] (F = hidden, or 2 hidden for SwiGLU), [N, hidden]
  };

  void register_parameters();
  void resize_buffers(int64_t N, bool training);
  int64_t fc_width() const;
  BlockContext<T> block_context(uint32_t layer, float dropout, KvCache<T> *cache) const;
  int64_t aux_layers() const;
  const T *w(int64_t offset) const { return offset < 0 ? nullptr : params.values.data() + offset; }
  T *g(int64_t offset) { return offset < 0 ? nullptr : params.grads.data() + offset; }

  ModelConfig config_;
  std::vector<LayerParams> layers_;
  std::vector<std::unique_ptr<AttentionBlock<T>>> attn_;
  int64_t wte_ = -1, wpe_ = -1, lnf_w_ = -1, lnf_b_ = -1;
  RopeTable<T> rope_;

  // Activations of the last forward (all layers when training; layer 0's buffers reused in eval).
  std::vector<LayerActivations> acts_;
  std::vector<std::vector<T>> residual_;  // residual_[l]: input of block l; residual_[L]: input of ln_f
  std::vector<T> lnf_, lnf_mean_, lnf_rstd_, logits_, ce_lse_, scratch_c_;
  std::vector<int32_t> tokens_, targets_;
  RowSet all_rows_;  // every token of the last forward, with its position
  double aux_ = 0;
  int64_t B_ = 0, Tn_ = 0, past_ = 0, n_counted_ = 0;
  uint64_t dropout_step_ = 0;
  bool backward_ready_ = false;
  // Filled by decode steps (block_context hands it to the blocks, hence mutable); emptied by parameters_changed.
  mutable DecodeWeights<T> decode_weights_;
  // The last forward's: decode_weights_ when it was a decode step (a cache, at most kSkinnyRows tokens), else null.
  DecodeWeights<T> *decode_ = nullptr;

  // Gradient scratch, allocated on first backward.
  std::vector<T> d_res_, d_c_, d_ln_, d_hidden_, d_pre_, d_logits_, norm_scratch_;
};

extern template class Model<float>;
extern template class Model<double>;

}  // namespace moas
