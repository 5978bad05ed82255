#include "checkpoint.hpp"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "durable_file.hpp"
#include "errors.hpp"

namespace moas_cli {

namespace {

namespace fs = std::filesystem;

constexpr int kMetadataFormat = 1;
constexpr char kPairPrefix[] = "checkpoints/step-";
// What a kill during a save or a resumption can leave in DIR besides the pairs.
constexpr const char *kTemporaryFiles[] = {"latest.tmp", "model.safetensors.tmp", "metrics.jsonl.tmp"};

CheckpointPair pair_in(const std::string &directory) {
  return {directory + "/model.safetensors", directory + "/model.optim.safetensors"};
}

// DIR/model.optim.safetensors: where moas kept the optimizer state before DIR/latest existed.
std::string legacy_optimizer(const RunFiles &files) { return files.dir + "/model.optim.safetensors"; }

// The pair DIR/latest names, as that text ("checkpoints/step-000120"); empty when there is no DIR/latest. Only a
// name that a save writes is taken: tidying deletes every pair but this one, so it must not lead anywhere else.
std::string latest_pair_name(const RunFiles &files) {
  std::error_code ec;
  if (!fs::exists(files.latest, ec)) return "";
  std::ifstream in(files.latest);
  std::string name;
  std::getline(in, name);
  const std::string digits = name.substr(std::min(name.size(), sizeof kPairPrefix - 1));
  const bool written_by_a_save = name.rfind(kPairPrefix, 0) == 0 && !digits.empty() &&
                                 digits.find_first_not_of("0123456789") == std::string::npos;
  if (!in || !written_by_a_save || !fs::is_directory(files.dir + "/" + name, ec))
    throw RuntimeFailure(files.latest + " does not name a checkpoint in " + files.checkpoints +
                         ": write the name of one there (e.g. checkpoints/step-000100), or train again with "
                         "--overwrite");
  return name;
}

bool holds(const nlohmann::json &object, const char *key, nlohmann::json::value_t type) {
  const auto it = object.find(key);
  return it != object.end() && it->type() == type;
}

bool valid_metadata(const nlohmann::json &m) {
  using Type = nlohmann::json::value_t;
  if (!m.is_object() || !m.contains("vocabulary") || m.value("moas_train", nlohmann::json()) != kMetadataFormat)
    return false;
  const bool step_ok = (holds(m, "step", Type::number_integer) || holds(m, "step", Type::number_unsigned)) &&
                       m["step"].get<long long>() >= 0 && m["step"].get<long long>() <= INT_MAX;
  const bool data_ok = holds(m, "data", Type::object) && holds(m["data"], "source", Type::string) &&
                       holds(m["data"], "fingerprint", Type::string);
  if (!step_ok || !data_ok || !holds(m, "options", Type::object)) return false;
  for (const nlohmann::json &value : m["options"])
    if (!value.is_string()) return false;
  return true;
}

// Points DIR/model.safetensors at `weights` by a rename, so a reader sees either the old weights or the new.
void publish_weights(const RunFiles &files, const std::string &weights) {
  std::error_code ec;
  if (fs::equivalent(weights, files.model, ec)) return;
  const std::string temporary = files.model + ".tmp";
  fs::remove(temporary, ec);
  fs::create_hard_link(weights, temporary, ec);
  if (ec) {  // a filesystem without hard links: a copy does
    fs::copy_file(weights, temporary);
    sync_file(temporary);
  }
  fs::rename(temporary, files.model);
  sync_directory(files.dir);
}

}  // namespace

RunFiles::RunFiles(const std::string &directory)
    : dir(directory),
      latest(directory + "/latest"),
      checkpoints(directory + "/checkpoints"),
      model(directory + "/model.safetensors"),
      metrics(directory + "/metrics.jsonl"),
      plot(directory + "/train.svg") {}

nlohmann::json checkpoint_metadata(const Corpus &corpus, const TrainOptions &options, int step) {
  return {{"moas_train", kMetadataFormat},
          {"vocabulary", corpus.vocabulary.to_json()},
          {"step", step},
          {"data", {{"source", corpus.source}, {"fingerprint", corpus.fingerprint}}},
          {"seed", options.seed},
          {"options", option_values(options)}};
}

nlohmann::json read_checkpoint_metadata(const std::string &path) {
  size_t needed = 0;
  check_status(moas_checkpoint_user_metadata(path.c_str(), nullptr, 0, &needed), "reading " + path);
  std::vector<char> text(needed);
  check_status(moas_checkpoint_user_metadata(path.c_str(), text.data(), text.size(), &needed), "reading " + path);
  nlohmann::json metadata = nlohmann::json::parse(text.data(), nullptr, /*allow_exceptions=*/false);
  if (!valid_metadata(metadata))
    throw RuntimeFailure(path + " has no usable moas train metadata (vocabulary, step, data, settings): use a "
                                "checkpoint that moas train wrote");
  try {
    Vocabulary::from_json(metadata["vocabulary"]);
  } catch (const RuntimeFailure &e) {
    throw RuntimeFailure(path + ": " + e.what());
  }
  return metadata;
}

std::optional<CheckpointPair> latest_checkpoint(const RunFiles &files) {
  const std::string name = latest_pair_name(files);
  if (!name.empty()) return pair_in(files.dir + "/" + name);
  std::error_code ec;
  if (fs::exists(files.model, ec)) return CheckpointPair{files.model, legacy_optimizer(files)};
  return std::nullopt;
}

void save_checkpoint(const moas_model *model, const RunFiles &files, int step, const nlohmann::json &metadata) {
  char name[64];
  std::snprintf(name, sizeof name, "%s%06d", kPairPrefix, step);
  const std::string directory = files.dir + "/" + name;
  fs::remove_all(directory);  // what a killed save of this step left (DIR/latest names an earlier step)
  fs::create_directories(directory);
  const CheckpointPair pair = pair_in(directory);
  check_status(moas_model_save(model, pair.model.c_str(), metadata.dump().c_str()), "saving " + pair.model);
  check_status(moas_optimizer_save(model, pair.optimizer.c_str()), "saving " + pair.optimizer);
  sync_directory(directory);
  sync_directory(files.checkpoints);
  sync_directory(files.dir);
  replace_file(files.latest, std::string(name) + "\n");
  tidy_checkpoints(files);
}

void restore_checkpoint(moas_model *model, const CheckpointPair &pair, int step) {
  check_status(moas_model_load(model, pair.model.c_str()), "loading " + pair.model);
  check_status(moas_optimizer_load(model, pair.optimizer.c_str()), "loading " + pair.optimizer);
  uint64_t optimizer_steps = 0;
  check_status(moas_optimizer_steps(model, &optimizer_steps), "moas_optimizer_steps");
  if (optimizer_steps != (uint64_t)step)
    throw RuntimeFailure(pair.optimizer + " is at step " + std::to_string(optimizer_steps) + " but " + pair.model +
                         " at step " + std::to_string(step) + ": the pair was not saved together; resume from a "
                         "complete checkpoint");
}

void tidy_checkpoints(const RunFiles &files) {
  std::error_code ec;
  for (const char *temporary : kTemporaryFiles) fs::remove(files.dir + "/" + temporary, ec);
  const std::string kept = latest_pair_name(files);
  if (!kept.empty()) {
    publish_weights(files, pair_in(files.dir + "/" + kept).model);
    fs::remove(legacy_optimizer(files));
  }
  if (!fs::is_directory(files.checkpoints, ec)) return;
  for (const fs::directory_entry &entry : fs::directory_iterator(files.checkpoints))
    if ("checkpoints/" + entry.path().filename().string() != kept) fs::remove_all(entry.path());
}

void discard_checkpoints(const RunFiles &files) {
  fs::remove(files.model);
  fs::remove(legacy_optimizer(files));
  fs::remove(files.latest);
  sync_directory(files.dir);
  fs::remove_all(files.checkpoints);
}

}  // namespace moas_cli
