#include "attention/attention_block.hpp"

#include "attention/moas.hpp"
#include "attention/moh.hpp"
#include "attention/scheme.hpp"

namespace moas {

namespace {

// One scheme for every token (also MoH's AllHeads, which SPEC §4 defines as plain attention).
template <typename T>
class SchemeAttention final : public AttentionBlock<T> {
 public:
  SchemeAttention(const ModelConfig &c, ParamTable<T> &params, const std::string &prefix)
      : scheme_(params, prefix, SchemeShape{c.n_embd, c.n_head, c.n_kv_head, c.bias}, 0),
        options_(register_attention_options(params, prefix, c)) {}

  void forward(const ParamTable<T> &params, const T *x, T *y, const BlockContext<T> &ctx, bool) override {
    scheme_.forward(params, x, *ctx.all_rows, y, ctx, options_);
  }
  void backward(ParamTable<T> &params, const T *x, T *dy, T *dx, const BlockContext<T> &ctx, double) override {
    scheme_.backward(params, x, dy, dx, ctx, options_);
  }
  std::vector<int64_t> cache_widths() const override { return {scheme_.shape().kv_width()}; }

 private:
  Scheme<T> scheme_;
  AttentionOptions options_;
};

}  // namespace

template <typename T>
std::unique_ptr<AttentionBlock<T>> make_attention_block(const ModelConfig &config, ParamTable<T> &params,
                                                        const std::string &prefix) {
  if (config.attention == AttentionKind::Moas) return std::make_unique<MoasAttention<T>>(config, params, prefix);
  if (config.attention == AttentionKind::Moh && config.heads.strategy != HeadStrategy::AllHeads)
    return std::make_unique<MohAttention<T>>(config, params, prefix);
  return std::make_unique<SchemeAttention<T>>(config, params, prefix);
}

template std::unique_ptr<AttentionBlock<float>> make_attention_block(const ModelConfig &, ParamTable<float> &,
                                                                     const std::string &);
template std::unique_ptr<AttentionBlock<double>> make_attention_block(const ModelConfig &, ParamTable<double> &,
                                                                      const std::string &);

}  // namespace moas
