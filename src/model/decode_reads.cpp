#include "model/decode_reads.hpp"

#include <string>

#include "model/model.hpp"

namespace moas {

namespace {

bool ends_with(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The shares of a MoH layer's projections a token uses: query and output projections of its active heads; keys and
// values it writes (StaticPruning computes only the kv heads its active heads read; the other strategies every kv
// head, for the tokens to come) and reads.
struct HeadShares {
  double projections = 1, kv_written = 1, kv_read = 1;
};

HeadShares moh_shares(const ModelConfig &c) {
  const HeadSelection &hs = c.heads;
  const double H = (double)c.n_head;
  const int64_t group = c.n_head / c.n_kv_head;
  if (hs.strategy == HeadStrategy::MixtureOfHeads) {
    const double active = (double)(hs.num_shared_heads + hs.num_active_routed_heads);
    // With one kv head per query head a token reads only its active heads' keys and values; with groups, nearly every
    // group has an active head.
    return {active / H, 1.0, group == 1 ? active / H : 1.0};
  }
  if (hs.strategy == HeadStrategy::StaticPruning) {
    const int64_t kv_heads = (hs.num_active_heads + group - 1) / group;  // heads 0 .. A-1 read kv heads 0 .. this-1
    const double kv = (double)kv_heads / (double)c.n_kv_head;
    return {(double)hs.num_active_heads / H, kv, kv};
  }
  return {};
}

}  // namespace

DecodeReads decode_reads(const ModelConfig &c) {
  const double C = (double)c.n_embd, d = (double)c.head_dim();
  double always = 0, queries_outputs = 0, keys_values = 0;
  for (const ParamInfo &p : Model<float>::parameter_infos(c)) {
    const bool attention = p.name.find(".attn.") != std::string::npos;
    const double n = (double)p.numel;
    if (p.name == "transformer.wpe.weight") always += C;  // one position's row
    else if (p.name == "transformer.wte.weight") always += n + C;  // the tied head reads it all, the input one row
    else if (attention && (ends_with(p.name, "q_proj.weight") || ends_with(p.name, "c_proj.weight")))
      queries_outputs += n;
    else if (attention && (ends_with(p.name, "k_proj.weight") || ends_with(p.name, "v_proj.weight"))) keys_values += n;
    else if (attention && ends_with(p.name, "c_attn.weight")) queries_outputs += C * C, keys_values += n - C * C;
    else always += n;
  }
  double kv_heads = (double)c.n_kv_head;
  if (c.attention == AttentionKind::Moas) {
    kv_heads = 0;
    for (int64_t kv : c.moas.branch_kv_heads) kv_heads += (double)kv;
    if (c.moas.mode == MoasMode::Top1) {
      // Every branch's projections are C x C for queries and outputs: one branch's, whichever it is.
      const double branches = (double)c.moas.branch_kv_heads.size();
      queries_outputs /= branches;
      kv_heads /= branches;
    }
  } else if (c.attention == AttentionKind::Moh) {
    const HeadShares share = moh_shares(c);
    queries_outputs *= share.projections;
    keys_values *= share.kv_written;
    kv_heads *= share.kv_read;
  }
  DecodeReads reads;
  reads.weight_bytes = 4.0 * (always + queries_outputs + keys_values);
  reads.cache_bytes_per_position = 4.0 * 2.0 * kv_heads * d * (double)c.n_layer;
  return reads;
}

}  // namespace moas
