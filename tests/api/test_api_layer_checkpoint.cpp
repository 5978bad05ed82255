// Layer checkpoints (moas_layer_save / load / create_from_file and the optimiser state): a saved and reloaded layer
// trains on bit for bit; files of another layer, of a model, or of nothing are refused and leave the layer as it was.
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "api_helpers.hpp"
#include "moas.h"

namespace {

using namespace api_test;

// RustGPT's loop: one sequence per call, forward, backward, Adam step, zero_grad.
void train(moas_layer *l, int steps, uint32_t seed) {
  moas_layer_config c;
  c.struct_size = sizeof c;
  REQUIRE(moas_layer_get_config(l, &c) == MOAS_OK);
  moas_adamw_config adam;
  adam.struct_size = sizeof adam;
  REQUIRE(moas_adamw_config_rustgpt(&adam) == MOAS_OK);
  const int Tn = 9;
  const size_t n = (size_t)Tn * c.n_embd;
  for (int s = 0; s < steps; s++) {
    const std::vector<float> x = random_floats(n, seed + s), dy = random_floats(n, seed + 100 + s);
    std::vector<float> y(n), dx(n);
    REQUIRE(moas_layer_forward(l, x.data(), y.data(), n, 1, Tn, 1, nullptr) == MOAS_OK);
    REQUIRE(moas_layer_backward(l, dy.data(), dx.data(), n) == MOAS_OK);
    REQUIRE(moas_layer_optimizer_step(l, &adam, nullptr) == MOAS_OK);
    REQUIRE(moas_layer_zero_grad(l) == MOAS_OK);
  }
}

moas_layer_config routed_layer() {
  moas_layer_config c = layer_config();
  c.attention = MOAS_ATTENTION_MOH;
  c.head_selection.strategy = MOAS_HEADS_MIXTURE;
  c.head_selection.num_shared_heads = 1;
  c.head_selection.num_active_routed_heads = 2;
  c.position = MOAS_POSITION_ROPE;
  c.dropout = 0.1f;  // the restored forward counter must key the same masks
  return c;
}

}  // namespace

TEST_CASE("layer checkpoint: a saved and reloaded layer with its optimiser trains on bit for bit", "[api][layer]") {
  TempDir dir;
  const moas_layer_config cfg = routed_layer();
  LayerPtr original = make_layer(cfg);
  train(original.get(), 3, 1);
  REQUIRE(moas_layer_save(original.get(), dir.file("layer.safetensors").c_str(), "{\"note\":\"rustgpt\"}") ==
          MOAS_OK);
  REQUIRE(moas_layer_optimizer_save(original.get(), dir.file("layer.optim.safetensors").c_str()) == MOAS_OK);

  moas_layer *raw = nullptr;
  REQUIRE(moas_layer_create_from_file(dir.file("layer.safetensors").c_str(), nullptr, &raw) == MOAS_OK);
  LayerPtr restored(raw);
  REQUIRE(moas_layer_optimizer_load(restored.get(), dir.file("layer.optim.safetensors").c_str()) == MOAS_OK);
  REQUIRE(layer_weights(restored.get()) == layer_weights(original.get()));
  uint64_t steps = 0;
  REQUIRE(moas_layer_optimizer_steps(restored.get(), &steps) == MOAS_OK);
  REQUIRE(steps == 3);

  // The file holds the architecture; run settings (threads, device) come from the overrides, here the defaults.
  moas_layer_config read;
  read.struct_size = sizeof read;
  REQUIRE(moas_layer_get_config(original.get(), &read) == MOAS_OK);
  REQUIRE(std::memcmp(&read, &cfg, sizeof read) == 0);
  REQUIRE(moas_layer_get_config(restored.get(), &read) == MOAS_OK);
  REQUIRE(read.n_threads == 0);
  read.n_threads = cfg.n_threads;
  REQUIRE(std::memcmp(&read, &cfg, sizeof read) == 0);
  size_t needed = 0;
  REQUIRE(moas_checkpoint_user_metadata(dir.file("layer.safetensors").c_str(), nullptr, 0, &needed) == MOAS_OK);
  REQUIRE(needed == std::strlen("{\"note\":\"rustgpt\"}") + 1);

  train(original.get(), 3, 50);
  train(restored.get(), 3, 50);
  REQUIRE(layer_weights(restored.get()) == layer_weights(original.get()));

  SECTION("moas_layer_load into a layer made from the config does the same") {
    LayerPtr fresh = make_layer(cfg);
    REQUIRE(moas_layer_load(fresh.get(), dir.file("layer.safetensors").c_str()) == MOAS_OK);
    REQUIRE(moas_layer_optimizer_load(fresh.get(), dir.file("layer.optim.safetensors").c_str()) == MOAS_OK);
    train(fresh.get(), 3, 50);
    REQUIRE(layer_weights(fresh.get()) == layer_weights(original.get()));
  }
  SECTION("create_from_file takes the run settings from overrides") {
    moas_layer_config overrides = layer_config();
    overrides.n_threads = 1;
    raw = nullptr;
    REQUIRE(moas_layer_create_from_file(dir.file("layer.safetensors").c_str(), &overrides, &raw) == MOAS_OK);
    LayerPtr one_thread(raw);
    REQUIRE(moas_layer_get_config(one_thread.get(), &read) == MOAS_OK);
    REQUIRE(read.n_threads == 1);
    REQUIRE(read.attention == MOAS_ATTENTION_MOH);
  }
}

TEST_CASE("layer checkpoint: other layers', models' and broken files are refused, the layer unchanged",
          "[api][layer][errors]") {
  TempDir dir;
  moas_layer_config cfg = layer_config();
  LayerPtr layer = make_layer(cfg);
  const std::vector<float> before = layer_weights(layer.get());
  const std::string path = dir.file("layer.safetensors");
  REQUIRE(moas_layer_optimizer_save(layer.get(), dir.file("optim.safetensors").c_str()) == MOAS_ERR_NO_FORWARD);

  moas_layer_config wider = cfg;
  wider.n_embd = 64;
  LayerPtr other = make_layer(wider);
  REQUIRE(moas_layer_save(other.get(), path.c_str(), nullptr) == MOAS_OK);
  REQUIRE(moas_layer_load(layer.get(), path.c_str()) == MOAS_ERR_CHECKPOINT_CONFIG);
  REQUIRE(std::string(moas_last_error()).find("n_embd") != std::string::npos);

  moas_layer_config flat = cfg;
  flat.residual = 0;
  LayerPtr no_residual = make_layer(flat);
  REQUIRE(moas_layer_save(no_residual.get(), path.c_str(), nullptr) == MOAS_OK);
  REQUIRE(moas_layer_load(layer.get(), path.c_str()) == MOAS_ERR_CHECKPOINT_CONFIG);
  REQUIRE(std::string(moas_last_error()).find("residual") != std::string::npos);

  // A model's checkpoint is not a layer's, nor the other way round.
  ModelPtr model = make_model(small_config());
  REQUIRE(moas_model_save(model.get(), dir.file("model.safetensors").c_str(), nullptr) == MOAS_OK);
  REQUIRE(moas_layer_load(layer.get(), dir.file("model.safetensors").c_str()) == MOAS_ERR_CHECKPOINT_CONFIG);
  REQUIRE(std::string(moas_last_error()).find("model's checkpoint") != std::string::npos);
  moas_layer *raw = nullptr;
  REQUIRE(moas_layer_create_from_file(dir.file("model.safetensors").c_str(), nullptr, &raw) ==
          MOAS_ERR_CHECKPOINT_CONFIG);
  REQUIRE(raw == nullptr);
  REQUIRE(moas_model_load(model.get(), path.c_str()) == MOAS_ERR_CHECKPOINT_CONFIG);
  REQUIRE(std::string(moas_last_error()).find("layer's checkpoint") != std::string::npos);

  // Truncated and missing files.
  REQUIRE(moas_layer_save(layer.get(), path.c_str(), nullptr) == MOAS_OK);
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(dir.file("cut.safetensors"), std::ios::binary).write(bytes.data(), (std::streamsize)bytes.size() / 2);
  REQUIRE(moas_layer_load(layer.get(), dir.file("cut.safetensors").c_str()) != MOAS_OK);
  REQUIRE(moas_layer_load(layer.get(), dir.file("absent.safetensors").c_str()) != MOAS_OK);
  REQUIRE(moas_layer_load(layer.get(), nullptr) == MOAS_ERR_NULL_ARGUMENT);
  REQUIRE(moas_layer_create_from_file(path.c_str(), nullptr, nullptr) == MOAS_ERR_NULL_ARGUMENT);
  // An optimiser file is not a weights file.
  train(layer.get(), 1, 3);
  const std::vector<float> trained = layer_weights(layer.get());
  REQUIRE(moas_layer_optimizer_save(layer.get(), dir.file("optim.safetensors").c_str()) == MOAS_OK);
  REQUIRE(moas_layer_load(layer.get(), dir.file("optim.safetensors").c_str()) != MOAS_OK);
  REQUIRE(layer_weights(layer.get()) == trained);
  REQUIRE(trained != before);
}
