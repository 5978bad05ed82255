// Whole-model finite-difference checks in double, one per model option (SPEC §6.5).
#include <catch2/catch.hpp>

#include "gradcheck.hpp"
#include "model/model.hpp"
#include "model_fixtures.hpp"

using namespace moas;

TEST_CASE("model: every parameter gradient matches finite differences", "[model][gradcheck]") {
  for (const auto &[name, config] : moas_test::option_configs()) {
    DYNAMIC_SECTION(name) {
      Model<double> model(config);
      // Move norm gains and biases off their init values so their gradients are generic.
      for (const ParamInfo &info : model.params.infos())
        if (info.shape.size() == 1) {
          const auto noise = moas_test::random_vector((size_t)info.numel, (uint64_t)info.offset, 0.1);
          for (int64_t i = 0; i < info.numel; i++) model.params.values[(size_t)(info.offset + i)] += noise[(size_t)i];
        }
      const int64_t B = 2, Tn = 6;
      const auto tokens = moas_test::tokens_for(B * Tn, config.vocab_size, 3);
      auto targets = moas_test::tokens_for(B * Tn, config.vocab_size, 4);
      targets[1] = -1;  // ignored positions must not contribute
      targets[7] = -1;
      // Dropout masks are keyed by the forward counter: pin it so every evaluation sees the same masks.
      const uint64_t fixed_step = 5;
      auto loss = [&] {
        model.training_forwards = fixed_step;
        return model.forward(tokens.data(), targets.data(), B, Tn, true);
      };
      loss();
      model.backward();
      for (const ParamInfo &info : model.params.infos())
        moas_test::check_gradient(info.name, model.params.values.data() + info.offset, (size_t)info.numel,
                                  model.params.grads.data() + info.offset, loss, 12);
    }
  }
}
