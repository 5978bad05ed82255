// Finite-difference checks of whole double-precision models through routing and CoPE (SPEC §9): no routing decision
// may flip and no CoPE position may cross an integer between the evaluations.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "attention/routing.hpp"
#include "gradcheck.hpp"
#include "model/model.hpp"
#include "model_fixtures.hpp"

namespace moas_test {

inline bool is_router_weight(const std::string &name) {
  return name.find(".router.") != std::string::npos || name.find(".wg") != std::string::npos;
}

// What routing decided in every layer: MoAS the argmax branch per token, MoH which (token, head) pairs are active.
template <typename T>
std::vector<int64_t> decisions(const moas::Model<T> &model) {
  std::vector<int64_t> out;
  for (int64_t l = 0; l < model.config().n_layer; l++) {
    int64_t width = 0;
    const std::vector<T> g = model.gates(l, &width);
    for (size_t n = 0; width > 0 && n < g.size() / (size_t)width; n++) {
      if (model.config().attention == moas::AttentionKind::Moas) {
        out.push_back(moas::argmax_lower(g.data() + n * (size_t)width, width));
      } else {
        for (int64_t i = 0; i < width; i++) out.push_back(g[n * (size_t)width + (size_t)i] != T(0));
      }
    }
  }
  return out;
}

// Finite differences of CE + lambda * aux over every parameter tensor (12 samples each), asserting that no routing
// decision moves between evaluations and, with CoPE, that the loss has no kink within a step.
inline void check_model_gradients(moas::ModelConfig config, int64_t B, int64_t Tn) {
  // A large load-balance weight makes its gradient visible next to the cross-entropy's.
  config.moas.aux_weight = 0.5;
  config.heads.load_balance_weight = 0.5;
  moas::Model<double> model(config);
  // Routers far from uniform give routing margins far above the finite-difference step; norm gains and biases
  // off their init values, and CoPE embeddings off their zero init, make their gradients generic. With CoPE, q and k
  // ten times their init size spread the gates, and give the position term a weight next to q . k.
  const bool cope = config.position == moas::PositionKind::Cope;
  for (const moas::ParamInfo &info : model.params.infos()) {
    double *v = model.params.values.data() + info.offset;
    const bool projection = info.name.find("c_attn.") != std::string::npos ||
                            info.name.find("q_proj.") != std::string::npos ||
                            info.name.find("k_proj.") != std::string::npos;
    if (is_router_weight(info.name) || (cope && projection))
      for (int64_t i = 0; i < info.numel; i++) v[i] *= is_router_weight(info.name) ? 40.0 : 10.0;
    if (info.shape.size() == 1) {
      const auto noise = random_vector((size_t)info.numel, (uint64_t)info.offset, 0.1);
      for (int64_t i = 0; i < info.numel; i++) v[i] += noise[(size_t)i];
    }
  }
  randomise_cope_embeddings(model.params);
  const auto tokens = tokens_for(B * Tn, config.vocab_size, 3);
  auto targets = tokens_for(B * Tn, config.vocab_size, 4);
  targets[1] = -1;
  const uint64_t fixed_step = 5;  // the same dropout masks in every evaluation
  model.training_forwards = fixed_step;
  model.forward(tokens.data(), targets.data(), B, Tn, true);
  const std::vector<int64_t> routing = decisions(model);
  model.backward();
  auto loss = [&] {
    model.training_forwards = fixed_step;
    const double ce = model.forward(tokens.data(), targets.data(), B, Tn, true);
    REQUIRE(decisions(model) == routing);
    return ce + model.config().aux_weight() * model.aux_loss();
  };
  for (const moas::ParamInfo &info : model.params.infos())
    check_gradient(info.name, model.params.values.data() + info.offset, (size_t)info.numel,
                   model.params.grads.data() + info.offset, loss, 12, cope);
}

}  // namespace moas_test
