#include "cuda_attention.hpp"

#include "cuda_scheme.hpp"
#include "error.hpp"

namespace moas {

std::unique_ptr<CudaAttention> make_cuda_attention(const moas_cuda_backend &t, const ModelConfig &config,
                                                   const ParamTable<float> &params, const std::string &prefix) {
  switch (config.attention) {
    case AttentionKind::Scheme:
      return std::make_unique<CudaScheme>(t, config, params, prefix);
    case AttentionKind::Moas:
      break;
    case AttentionKind::Moh:
      break;
  }
  fail(MOAS_ERR_INTERNAL, "make_cuda_attention: check_cuda_support admits only what is ported");
}

}  // namespace moas
