#include "checkpoint/checkpoint.hpp"

#include <cmath>
#include <map>
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
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

ModelConfig config_of(const safetensors::File &file, const std::string &path) {
  auto it = file.metadata.find("config");
  require(it != file.metadata.end(), MOAS_ERR_CHECKPOINT_CONFIG,
          path + ": no \"config\" in the metadata: this is not a libmoas checkpoint (or it was written without one)");
  return from_json(it->second, path);
}

void check_architecture(const safetensors::File &file, const Model<float> &model, const std::string &path) {
  const std::string diff = architecture_difference(config_of(file, path), model.config());
  require(diff.empty(), MOAS_ERR_CHECKPOINT_CONFIG,
          path + " holds another model: " + diff + "; create the model with moas_model_create_from_file");
}

// Converts a tensor to float after checking its shape and that every value is finite.
std::vector<float> checked_values(const safetensors::Tensor &t, const std::vector<int64_t> &shape,
                                  const std::string &path) {
  require(t.shape == shape, MOAS_ERR_CHECKPOINT_SHAPE,
          path + ": tensor \"" + t.name + "\" has shape " + shape_text(t.shape) + " but the model needs " +
              shape_text(shape));
  std::vector<float> values = safetensors::to_f32(t);
  for (size_t i = 0; i < values.size(); i++)
    require(std::isfinite(values[i]), MOAS_ERR_NON_FINITE,
            path + ": tensor \"" + t.name + "\" holds a non-finite value at element " + std::to_string(i));
  return values;
}

}  // namespace

void save_model(const Model<float> &model, const std::string &path, const char *user_metadata) {
  std::vector<safetensors::TensorToWrite> tensors;
  for (const ParamInfo &info : model.params.infos())
    tensors.push_back({info.name, info.shape, model.params.value(info.offset)});
  const ParamInfo &wte = model.params.find(kEmbedding);
  tensors.push_back({kTiedHead, wte.shape, model.params.value(wte.offset)});
  std::map<std::string, std::string> metadata{
      {"format", "pt"}, {"config", to_json(model.config())}, {"libmoas_version", kVersion}};
  if (user_metadata) metadata["user"] = user_metadata;
  safetensors::write_file(path, tensors, metadata);
}

void load_model(Model<float> &model, const std::string &path) {
  const safetensors::File file = safetensors::read_file(path);
  check_architecture(file, model, path);

  std::set<std::string> seen;
  std::vector<std::pair<const ParamInfo *, std::vector<float>>> staged;
  for (const ParamInfo &info : model.params.infos()) {
    const safetensors::Tensor *t = file.find(info.name);
    // The LM head is tied to wte: a state_dict may carry either name (PyTorch writes both).
    if (!t && info.name == kEmbedding) t = file.find(kTiedHead);
    require(t != nullptr, MOAS_ERR_CHECKPOINT_MISSING_TENSOR,
            path + ": tensor \"" + info.name + "\" is missing (shape " + shape_text(info.shape) + ")");
    staged.emplace_back(&info, checked_values(*t, info.shape, path));
    seen.insert(t->name);
  }
  for (const safetensors::Tensor &t : file.tensors) {
    if (seen.count(t.name)) continue;
    if (t.name == kTiedHead) {
      (void)checked_values(t, model.params.find(kEmbedding).shape, path);
      continue;
    }
    fail(MOAS_ERR_CHECKPOINT_UNEXPECTED_TENSOR,
         path + ": tensor \"" + t.name + "\" does not belong to this model (a checkpoint of another architecture?)");
  }
  for (auto &[info, values] : staged) std::copy(values.begin(), values.end(), model.params.value(info->offset));
}

ModelConfig read_checkpoint_config(const std::string &path) { return config_of(safetensors::read_file(path), path); }

std::string read_user_metadata(const std::string &path) {
  const safetensors::File file = safetensors::read_file(path);
  auto it = file.metadata.find("user");
  return it == file.metadata.end() ? std::string() : it->second;
}

void save_optimizer(const Model<float> &model, const std::string &path) {
  require(!model.optimizer.exp_avg.empty(), MOAS_ERR_NO_FORWARD,
          "the optimizer has no state yet: take at least one moas_optimizer_step before saving it");
  std::vector<safetensors::TensorToWrite> tensors;
  for (const ParamInfo &info : model.params.infos()) {
    tensors.push_back({info.name + ".exp_avg", info.shape, model.optimizer.exp_avg.data() + info.offset});
    tensors.push_back({info.name + ".exp_avg_sq", info.shape, model.optimizer.exp_avg_sq.data() + info.offset});
  }
  safetensors::write_file(path, tensors,
                   {{"config", to_json(model.config())},
                    {"step", std::to_string(model.optimizer.step)},
                    {"training_forwards", std::to_string(model.training_forwards)},
                    {"libmoas_version", kVersion}});
}

void load_optimizer(Model<float> &model, const std::string &path) {
  const safetensors::File file = safetensors::read_file(path);
  check_architecture(file, model, path);
  auto counter = [&](const char *key) -> uint64_t {
    auto it = file.metadata.find(key);
    require(it != file.metadata.end() && !it->second.empty() &&
                it->second.find_first_not_of("0123456789") == std::string::npos && it->second.size() < 20,
            MOAS_ERR_CHECKPOINT_CONFIG, path + ": metadata \"" + key + "\" is missing or not a count");
    return std::stoull(it->second);
  };
  const uint64_t step = counter("step"), forwards = counter("training_forwards");
  std::vector<float> exp_avg(model.params.values.size()), exp_avg_sq(model.params.values.size());
  std::set<std::string> expected;
  for (const ParamInfo &info : model.params.infos()) {
    for (auto [suffix, target] : {std::pair{".exp_avg", &exp_avg}, std::pair{".exp_avg_sq", &exp_avg_sq}}) {
      const std::string name = info.name + suffix;
      expected.insert(name);
      const safetensors::Tensor *t = file.find(name);
      require(t != nullptr, MOAS_ERR_CHECKPOINT_MISSING_TENSOR, path + ": tensor \"" + name + "\" is missing");
      const std::vector<float> values = checked_values(*t, info.shape, path);
      std::copy(values.begin(), values.end(), target->begin() + info.offset);
    }
  }
  for (const safetensors::Tensor &t : file.tensors)
    require(expected.count(t.name) != 0, MOAS_ERR_CHECKPOINT_UNEXPECTED_TENSOR,
            path + ": tensor \"" + t.name + "\" does not belong to this model's optimizer state");
  model.optimizer.exp_avg = std::move(exp_avg);
  model.optimizer.exp_avg_sq = std::move(exp_avg_sq);
  model.optimizer.step = step;
  model.training_forwards = forwards;
}

}  // namespace moas
