// libmoas against an independent PyTorch implementation (tools/reference/gpt.py, float64), from the files
// tools/reference/make_reference.py wrote: the checkpoint loads by its state_dict names, and logits, loss, the
// load-balance loss and every gradient (of CE + weight * aux) match — in double to 1e-9, and through the float C ABI
// to SPEC §9's CPU tolerance scaled for float. Covers one scheme (MHA/GQA/MQA), every MoAS mode and every MoH
// strategy; the routed cases were generated with routing margins far above float noise.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.hpp"
#include "checkpoint/safetensors.hpp"
#include "gradcheck.hpp"
#include "moas.h"
#include "model/model.hpp"

using namespace moas;

namespace {

const std::string kDir = MOAS_REFERENCE_DIR;
const char *kCases[] = {"mha_layernorm_gelu",  "gqa_bias",           "mqa_rmsnorm_swiglu_rope",
                        "gqa_6_3_rope_bias",   "moas_static",        "moas_soft",
                        "moas_top1",           "moas_soft_rope_rms_custom_branches",
                        "moh_mixture",         "moh_mixture_gqa_rope", "moh_routed_only",
                        "moh_static_pruning",  "moh_one_shared"};

template <typename T>
std::vector<T> raw(const safetensors::File &file, const std::string &name) {
  const safetensors::Tensor *t = file.find(name);
  REQUIRE(t != nullptr);
  REQUIRE(t->nbytes % sizeof(T) == 0);
  const std::vector<uint8_t> bytes = file.read(*t);
  std::vector<T> out(t->nbytes / sizeof(T));
  std::memcpy(out.data(), bytes.data(), t->nbytes);
  return out;
}

// max|got - expected| / max|expected|, with a floor of 1e-6 on the scale: some gradients are exactly zero in exact
// arithmetic (a key bias cannot change a softmax) and both sides then hold only rounding noise.
double worst_relative(const std::vector<double> &expected, const double *got) {
  double scale = 1e-6, diff = 0;
  for (size_t i = 0; i < expected.size(); i++) {
    scale = std::max(scale, std::fabs(expected[i]));
    diff = std::max(diff, std::fabs(expected[i] - got[i]));
  }
  return diff / scale;
}

}  // namespace

TEST_CASE("double model equals the PyTorch reference: logits, loss and every gradient", "[reference]") {
  for (const char *name : kCases) {
    DYNAMIC_SECTION(name) {
      const std::string weights_path = kDir + "/" + name + ".safetensors";
      const safetensors::File weights = safetensors::read_file(weights_path);
      const safetensors::File expected = safetensors::read_file(kDir + "/" + name + ".expected.safetensors");
      REQUIRE(expected.metadata.at("format_version") == "1");
      // The C config holds lambda as a float; the reference used the exact decimal, so give the double model that.
      ModelConfig config = read_checkpoint_config(weights_path);
      config.moas.aux_weight = config.heads.load_balance_weight = std::stod(expected.metadata.at("aux_weight"));
      Model<double> model(config);
      for (const ParamInfo &info : model.params.infos()) {
        const std::vector<float> v = safetensors::to_f32(weights, *weights.find(info.name));
        std::copy(v.begin(), v.end(), model.params.values.begin() + info.offset);
      }
      const auto tokens = raw<int32_t>(expected, "tokens"), targets = raw<int32_t>(expected, "targets");
      const int64_t B = expected.find("tokens")->shape[0], Tn = expected.find("tokens")->shape[1];
      const double loss = model.forward(tokens.data(), targets.data(), B, Tn, true);
      REQUIRE(loss == Approx(raw<double>(expected, "loss")[0]).epsilon(1e-10));
      REQUIRE(model.aux_loss() == Approx(raw<double>(expected, "aux")[0]).epsilon(1e-9).margin(1e-12));
      const double logit_error = worst_relative(raw<double>(expected, "logits"), model.logits().data());
      INFO("worst logit error " << logit_error);
      REQUIRE(logit_error < 1e-9);
      model.backward();
      for (const ParamInfo &info : model.params.infos()) {
        const double err = worst_relative(raw<double>(expected, "grad." + info.name),
                                          model.params.grads.data() + info.offset);
        INFO(info.name << ": worst relative gradient error " << err);
        REQUIRE(err < 1e-8);
      }
    }
  }
}

TEST_CASE("the PyTorch state_dict loads through the C ABI and the float model matches it", "[reference][api]") {
  for (const char *name : kCases) {
    DYNAMIC_SECTION(name) {
      const safetensors::File expected = safetensors::read_file(kDir + "/" + name + ".expected.safetensors");
      moas_model *model = nullptr;
      const moas_status status =
          moas_model_create_from_file((kDir + "/" + name + ".safetensors").c_str(), nullptr, &model);
      INFO(moas_last_error());
      REQUIRE(status == MOAS_OK);
      const auto tokens = raw<int32_t>(expected, "tokens"), targets = raw<int32_t>(expected, "targets");
      const int32_t B = (int32_t)expected.find("tokens")->shape[0], Tn = (int32_t)expected.find("tokens")->shape[1];
      float loss = 0, aux = 0;
      REQUIRE(moas_forward(model, tokens.data(), targets.data(), B, Tn, 1, &loss, &aux) == MOAS_OK);
      REQUIRE(aux == Approx(raw<double>(expected, "aux")[0]).epsilon(1e-5).margin(1e-7));
      const auto want = raw<double>(expected, "logits");
      std::vector<float> logits(want.size());
      REQUIRE(moas_logits(model, logits.data(), logits.size()) == MOAS_OK);
      const std::vector<double> got(logits.begin(), logits.end());
      const double err = worst_relative(want, got.data());
      INFO("worst logit error (float) " << err);
      REQUIRE(err < 1e-5);
      REQUIRE(loss == Approx(raw<double>(expected, "loss")[0]).epsilon(1e-5));
      moas_model_destroy(model);
    }
  }
}
