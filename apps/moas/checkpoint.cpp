#include "checkpoint.hpp"

#include <filesystem>
#include <vector>

#include "errors.hpp"

namespace moas_cli {

namespace {

constexpr int kMetadataFormat = 1;

}  // namespace

RunFiles::RunFiles(const std::string &directory)
    : dir(directory),
      model(directory + "/model.safetensors"),
      optimizer(directory + "/model.optim.safetensors"),
      metrics(directory + "/metrics.jsonl") {}

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
  const bool ours = metadata.is_object() && metadata.value("moas_train", 0) == kMetadataFormat &&
                    metadata.contains("vocabulary") && metadata.contains("step") &&
                    metadata["step"].is_number_integer() && metadata.contains("options") &&
                    metadata["options"].is_object() && metadata.contains("data") && metadata["data"].is_object();
  if (!ours)
    throw RuntimeFailure(path + " has no moas train metadata (vocabulary, step, settings): use a checkpoint that "
                                "moas train wrote");
  return metadata;
}

void save_checkpoint(const moas_model *model, const RunFiles &files, const nlohmann::json &metadata) {
  std::filesystem::create_directories(files.dir);
  check_status(moas_model_save(model, files.model.c_str(), metadata.dump().c_str()), "saving " + files.model);
  check_status(moas_optimizer_save(model, files.optimizer.c_str()), "saving " + files.optimizer);
}

void restore_checkpoint(moas_model *model, const RunFiles &files, int step) {
  check_status(moas_model_load(model, files.model.c_str()), "loading " + files.model);
  check_status(moas_optimizer_load(model, files.optimizer.c_str()), "loading " + files.optimizer);
  uint64_t optimizer_steps = 0;
  check_status(moas_optimizer_steps(model, &optimizer_steps), "moas_optimizer_steps");
  if (optimizer_steps != (uint64_t)step)
    throw RuntimeFailure(files.optimizer + " is at step " + std::to_string(optimizer_steps) + " but " + files.model +
                         " at step " + std::to_string(step) + ": the pair was not saved together; resume from a "
                         "complete checkpoint");
}

MetricsLog::MetricsLog(const std::string &path, int resumed_step) : path_(path) {
  std::vector<std::string> kept;
  if (resumed_step > 0) {
    std::ifstream previous(path);
    std::string line;
    while (std::getline(previous, line)) {
      const nlohmann::json entry = nlohmann::json::parse(line, nullptr, false);
      if (entry.is_object() && entry.value("step", resumed_step + 1) <= resumed_step) kept.push_back(line);
    }
  }
  out_.open(path, std::ios::trunc);
  if (!out_) throw RuntimeFailure("cannot write " + path + ": check that the directory is writable");
  for (const std::string &line : kept) out_ << line << '\n';
  out_.flush();
}

void MetricsLog::write(const nlohmann::ordered_json &entry) {
  out_ << entry.dump() << '\n';
  out_.flush();
  if (!out_) throw RuntimeFailure("cannot write " + path_ + ": is the disk full?");
}

}  // namespace moas_cli
