#include "cuda_host/cuda_attention.hpp"

#include "base/error.hpp"
#include "cuda_host/cuda_moas.hpp"
#include "cuda_host/cuda_moh.hpp"
#include "cuda_host/cuda_scheme.hpp"

namespace moas {

std::unique_ptr<CudaAttention> make_cuda_attention(const moas_cuda_backend &t, const ModelConfig &config,
                                                   const ParamTable<float> &params, const std::string &prefix) {
  switch (config.attention) {
    case AttentionKind::Scheme:
      return std::make_unique<CudaScheme>(t, config, params, prefix);
    case AttentionKind::Moas:
      return std::make_unique<CudaMoas>(t, config, params, prefix);
    case AttentionKind::Moh:  // AllHeads is one scheme (SPEC §4), as make_attention_block has it
      if (config.heads.strategy == HeadStrategy::AllHeads)
        return std::make_unique<CudaScheme>(t, config, params, prefix);
      return std::make_unique<CudaMoh>(t, config, params, prefix);
  }
  fail(MOAS_ERR_INTERNAL, "make_cuda_attention: unknown attention kind");
}

}  // namespace moas
