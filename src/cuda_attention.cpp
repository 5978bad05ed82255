#include "cuda_attention.hpp"

#include "cuda_scheme.hpp"
#include "error.hpp"

namespace moas {

std::unique_ptr<CudaAttention> make_cuda_attention(const moas_cuda_backend &t, const ModelConfig &config,
                                                   const ParamTable<float> &params, const std::string &prefix) {
  require(config.attention == AttentionKind::Scheme, MOAS_ERR_INTERNAL,
          "make_cuda_attention: check_cuda_support admits only one scheme");
  return std::make_unique<CudaScheme>(t, config, params, prefix);
}

}  // namespace moas
