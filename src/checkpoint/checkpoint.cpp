#include "checkpoint/checkpoint.hpp"

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "base/error.hpp"
#include "base/version.hpp"
#include "checkpoint/safetensors.hpp"

namespace moas {

namespace {

constexpr const char *kTiedHead = "lm_head.weight";
constexpr const char *kEmbedding = "transformer.wte.weight";

std::string shape_text(const std::vector<int64_t> &shape) {
  constexpr size_t kShown = 8;  // a hostile file's shape may list thousands of dimensions
  std::string s = "[";
  for (size_t i = 0; i < shape.size() && i < kShown; i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() > kShown) s += ", ... (" + std::to_string(shape.size()) + " dimensions)";
  return s + "]";
}

std::string quoted_name(const std::string &name) { return "\"" + safetensors::printable(name) + "\""; }

size_t index_of(const std::vector<ParamInfo> &infos, const std::string &name) {
  for (size_t i = 0; i < infos.size(); i++)
    if (infos[i].name == name) return i;
  return infos.size();
}

ModelConfig config_of(const safetensors::File &file, const std::string &path) {
  auto it = file.metadata.find("config");
  MOAS_REQUIRE(it != file.metadata.end(), MOAS_ERR_CHECKPOINT_CONFIG,
               path + ": no \"config\" in the metadata: this is not a libmoas checkpoint (or it was written without "
                      "one)");
  return from_json(it->second, path);
}

// Layer checkpoints carry metadata "layer"; model checkpoints do not.
constexpr const char *kLayerKey = "layer";

void check_kind(const safetensors::File &file, bool want_layer, const std::string &path) {
  const bool is_layer = file.metadata.count(kLayerKey) != 0;
  MOAS_REQUIRE(is_layer == want_layer, MOAS_ERR_CHECKPOINT_CONFIG,
               is_layer ? path + " is an attention layer's checkpoint (moas_layer_save): load it with "
                                 "moas_layer_load or moas_layer_create_from_file"
                        : path + " is a model's checkpoint (moas_model_save), not a layer's: load it with "
                                 "moas_model_load or moas_model_create_from_file");
}

void check_architecture(const safetensors::File &file, const ModelConfig &config, const std::string &path,
                        const char *create_call) {
  const std::string diff = architecture_difference(config_of(file, path), config);
  MOAS_REQUIRE(diff.empty(), MOAS_ERR_CHECKPOINT_CONFIG,
               path + " holds another architecture: " + diff + "; create it with " + create_call);
}

bool residual_of(const safetensors::File &file, const std::string &path) {
  nlohmann::json layer;
  try {
    layer = nlohmann::json::parse(file.metadata.at(kLayerKey));
  } catch (const nlohmann::json::exception &) {
    fail(MOAS_ERR_CHECKPOINT_CONFIG, path + ": metadata \"layer\" is not JSON");
  }
  MOAS_REQUIRE(layer.is_object() && layer.size() == 1 && layer.contains("residual") && layer["residual"].is_boolean(),
               MOAS_ERR_CHECKPOINT_CONFIG, path + ": metadata \"layer\" must be {\"residual\": true or false}");
  return layer["residual"].get<bool>();
}

// The file holds exactly the tensors `infos` names, each in the shape given and a dtype libmoas reads; `tied` (a
// model's LM head) may stand in for wte and may appear beside it. Checked from the header alone, so a file that
// promises a huge model without holding it is refused before anything is allocated for that model.
void check_tensors(const safetensors::File &file, const std::vector<ParamInfo> &infos, bool tied,
                   const std::string &path) {
  std::set<std::string> expected;
  const ParamInfo *embedding = nullptr;
  for (const ParamInfo &info : infos) {
    expected.insert(info.name);
    if (info.name == kEmbedding) embedding = &info;
    const safetensors::Tensor *t = file.find(info.name);
    if (!t && tied && info.name == kEmbedding) t = file.find(kTiedHead);
    MOAS_REQUIRE(t != nullptr, MOAS_ERR_CHECKPOINT_MISSING_TENSOR,
                 path + ": tensor \"" + info.name + "\" is missing (shape " + shape_text(info.shape) + ")");
  }
  for (const safetensors::Tensor &t : file.tensors) {
    const bool head = tied && embedding && t.name == kTiedHead;
    MOAS_REQUIRE(head || expected.count(t.name), MOAS_ERR_CHECKPOINT_UNEXPECTED_TENSOR,
                 path + ": tensor " + quoted_name(t.name) + " does not belong to this model (a checkpoint of "
                 "another architecture?)");
    const std::vector<int64_t> &shape = head ? embedding->shape : infos[index_of(infos, t.name)].shape;
    MOAS_REQUIRE(t.shape == shape, MOAS_ERR_CHECKPOINT_SHAPE,
                 path + ": tensor " + quoted_name(t.name) + " has shape " + shape_text(t.shape) +
                 " but the model needs " + shape_text(shape));
    MOAS_REQUIRE(t.dtype == "F32" || t.dtype == "F16" || t.dtype == "BF16", MOAS_ERR_CHECKPOINT_DTYPE,
                 path + ": tensor " + quoted_name(t.name) + " has dtype " + quoted_name(t.dtype) +
                 "; only F32, F16 and BF16 can be loaded");
  }
}

// A tensor's values as float, each checked finite (and, for a second moment, non-negative).
std::vector<float> checked_values(const safetensors::File &file, const safetensors::Tensor &t, const std::string &path,
                                  bool non_negative = false) {
  std::vector<float> values = safetensors::to_f32(file, t);
  for (size_t i = 0; i < values.size(); i++) {
    MOAS_REQUIRE(std::isfinite(values[i]), MOAS_ERR_NON_FINITE,
                 path + ": tensor \"" + t.name + "\" holds a non-finite value at element " + std::to_string(i));
    MOAS_REQUIRE(!non_negative || values[i] >= 0, MOAS_ERR_CHECKPOINT_VALUE,
                 path + ": tensor \"" + t.name + "\" holds " + std::to_string(values[i]) + " at element " +
                 std::to_string(i) + ", but a second moment (a running mean of squares) is never negative");
  }
  return values;
}

std::vector<safetensors::TensorToWrite> parameter_tensors(const ParamTable<float> &params) {
  std::vector<safetensors::TensorToWrite> tensors;
  for (const ParamInfo &info : params.infos()) tensors.push_back({info.name, info.shape, params.value(info.offset)});
  return tensors;
}

// Every tensor of `params` from the file, checked before any is copied; `tied` (a model's LM head) may stand in for
// wte and is checked but not loaded.
void load_parameters(const safetensors::File &file, ParamTable<float> &params, bool tied, const std::string &path) {
  check_tensors(file, params.infos(), tied, path);
  std::vector<std::pair<const ParamInfo *, std::vector<float>>> staged;
  for (const ParamInfo &info : params.infos()) {
    const safetensors::Tensor *t = file.find(info.name);
    if (!t) t = file.find(kTiedHead);  // check_tensors allows this for wte alone
    staged.emplace_back(&info, checked_values(file, *t, path));
  }
  if (const safetensors::Tensor *head = file.find(kTiedHead); tied && head && file.find(kEmbedding))
    (void)checked_values(file, *head, path);
  for (auto &[info, values] : staged) std::copy(values.begin(), values.end(), params.value(info->offset));
}

void save_optimizer_state(const ParamTable<float> &params, const AdamWState<float> &optimizer,
                          uint64_t training_forwards, std::map<std::string, std::string> metadata,
                          const std::string &path, const char *step_call) {
  MOAS_REQUIRE(!optimizer.exp_avg.empty(), MOAS_ERR_NO_FORWARD,
               std::string("the optimizer has no state yet: take at least one ") + step_call + " before saving it");
  std::vector<safetensors::TensorToWrite> tensors;
  for (const ParamInfo &info : params.infos()) {
    tensors.push_back({info.name + ".exp_avg", info.shape, optimizer.exp_avg.data() + info.offset});
    tensors.push_back({info.name + ".exp_avg_sq", info.shape, optimizer.exp_avg_sq.data() + info.offset});
  }
  metadata["step"] = std::to_string(optimizer.step);
  metadata["training_forwards"] = std::to_string(training_forwards);
  metadata["libmoas_version"] = kVersion;
  safetensors::write_file(path, tensors, metadata);
}

// The moments and counters of the file, checked whole before any is kept.
void load_optimizer_state(const safetensors::File &file, const ParamTable<float> &params,
                          AdamWState<float> &optimizer, uint64_t &training_forwards, const std::string &path) {
  auto counter = [&](const char *key) -> uint64_t {
    auto it = file.metadata.find(key);
    MOAS_REQUIRE(it != file.metadata.end() && !it->second.empty() &&
                 it->second.find_first_not_of("0123456789") == std::string::npos && it->second.size() < 20,
                 MOAS_ERR_CHECKPOINT_CONFIG, path + ": metadata \"" + key + "\" is missing or not a count");
    return std::stoull(it->second);
  };
  const uint64_t step = counter("step"), forwards = counter("training_forwards");
  std::vector<ParamInfo> moments;
  for (const ParamInfo &info : params.infos())
    for (const char *suffix : {".exp_avg", ".exp_avg_sq"})
      moments.push_back({info.name + suffix, info.shape, 0, 0, false});
  check_tensors(file, moments, false, path);
  std::vector<float> exp_avg(params.values.size()), exp_avg_sq(params.values.size());
  for (const ParamInfo &info : params.infos()) {
    for (auto [suffix, target] : {std::pair{".exp_avg", &exp_avg}, std::pair{".exp_avg_sq", &exp_avg_sq}}) {
      const std::vector<float> values = checked_values(file, *file.find(info.name + suffix), path,
                                                       target == &exp_avg_sq);
      std::copy(values.begin(), values.end(), target->begin() + info.offset);
    }
  }
  optimizer.exp_avg = std::move(exp_avg);
  optimizer.exp_avg_sq = std::move(exp_avg_sq);
  optimizer.step = step;
  training_forwards = forwards;
}

std::string layer_metadata(bool residual) { return residual ? "{\"residual\":true}" : "{\"residual\":false}"; }

void check_layer_file(const safetensors::File &file, const AttentionLayer<float> &layer, const std::string &path) {
  check_kind(file, true, path);
  check_architecture(file, layer.config(), path, "moas_layer_create_from_file");
  MOAS_REQUIRE(residual_of(file, path) == layer.residual(), MOAS_ERR_CHECKPOINT_CONFIG,
               path + " holds a layer with residual = " + (layer.residual() ? "0" : "1") + " but this layer has " +
               (layer.residual() ? "1" : "0") + "; create it with moas_layer_create_from_file");
}

}  // namespace

void save_model(const Model<float> &model, const std::string &path, const char *user_metadata) {
  std::vector<safetensors::TensorToWrite> tensors = parameter_tensors(model.params);
  const ParamInfo &wte = model.params.find(kEmbedding);
  tensors.push_back({kTiedHead, wte.shape, model.params.value(wte.offset)});
  std::map<std::string, std::string> metadata{
      {"format", "pt"}, {"config", to_json(model.config())}, {"libmoas_version", kVersion}};
  if (user_metadata) metadata["user"] = user_metadata;
  safetensors::write_file(path, tensors, metadata);
}

void load_model(Model<float> &model, const std::string &path) {
  const safetensors::File file = safetensors::read_file(path);
  check_kind(file, false, path);
  check_architecture(file, model.config(), path, "moas_model_create_from_file");
  load_parameters(file, model.params, true, path);
}

ModelConfig read_checkpoint_config(const std::string &path) {
  const safetensors::File file = safetensors::read_file(path);
  check_kind(file, false, path);
  const ModelConfig config = config_of(file, path);
  check_tensors(file, Model<float>::parameter_infos(config), true, path);
  return config;
}

std::string read_user_metadata(const std::string &path) {
  const safetensors::File file = safetensors::read_file(path);
  auto it = file.metadata.find("user");
  return it == file.metadata.end() ? std::string() : it->second;
}

void save_optimizer(const Model<float> &model, const std::string &path) {
  save_optimizer_state(model.params, model.optimizer, model.training_forwards, {{"config", to_json(model.config())}},
                       path, "moas_optimizer_step");
}

void load_optimizer(Model<float> &model, const std::string &path) {
  const safetensors::File file = safetensors::read_file(path);
  check_kind(file, false, path);
  check_architecture(file, model.config(), path, "moas_model_create_from_file");
  load_optimizer_state(file, model.params, model.optimizer, model.training_forwards, path);
}

void save_layer(const AttentionLayer<float> &layer, const std::string &path, const char *user_metadata) {
  std::map<std::string, std::string> metadata{{"format", "pt"},
                                              {"config", to_json(layer.config())},
                                              {kLayerKey, layer_metadata(layer.residual())},
                                              {"libmoas_version", kVersion}};
  if (user_metadata) metadata["user"] = user_metadata;
  safetensors::write_file(path, parameter_tensors(layer.params), metadata);
}

void load_layer(AttentionLayer<float> &layer, const std::string &path) {
  const safetensors::File file = safetensors::read_file(path);
  check_layer_file(file, layer, path);
  load_parameters(file, layer.params, false, path);
}

LayerCheckpointConfig read_layer_checkpoint_config(const std::string &path) {
  const safetensors::File file = safetensors::read_file(path);
  check_kind(file, true, path);
  const ModelConfig config = config_of(file, path);
  check_tensors(file, AttentionLayer<float>::parameter_infos(config), false, path);
  return {config, residual_of(file, path)};
}

void save_layer_optimizer(const AttentionLayer<float> &layer, const std::string &path) {
  save_optimizer_state(layer.params, layer.optimizer, layer.training_forwards,
                       {{"config", to_json(layer.config())}, {kLayerKey, layer_metadata(layer.residual())}}, path,
                       "moas_layer_optimizer_step");
}

void load_layer_optimizer(AttentionLayer<float> &layer, const std::string &path) {
  const safetensors::File file = safetensors::read_file(path);
  check_layer_file(file, layer, path);
  load_optimizer_state(file, layer.params, layer.optimizer, layer.training_forwards, path);
}

}  // namespace moas
