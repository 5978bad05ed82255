#include "training_plot.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "durable_file.hpp"
#include "svg_plot.hpp"

namespace moas_cli {

void write_training_plot(const std::string &metrics_path, const std::string &svg_path) {
  LossCurve train{"train", {}, {}, /*thin=*/true}, val{"validation", {}, {}, false};
  std::vector<LossCurve> routes;
  std::ifstream log(metrics_path);
  std::string line;
  while (std::getline(log, line)) {
    const nlohmann::json entry = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!entry.is_object() || !entry.contains("step") || !entry["step"].is_number()) continue;
    const double step = entry["step"].get<double>();
    if (entry.contains("train_loss") && entry["train_loss"].is_number())
      train.points.emplace_back(step, entry["train_loss"].get<double>());
    if (!entry.contains("val_loss") || !entry["val_loss"].is_number()) continue;
    val.points.emplace_back(step, entry["val_loss"].get<double>());
    const nlohmann::json routing = entry.value("routing", nlohmann::json());
    if (!routing.is_object() || !routing["routes"].is_array() || !routing["layers"].is_array() ||
        routing["layers"].empty())
      continue;
    const nlohmann::json &names = routing["routes"], &share = routing["layers"].back()["share"];
    if (!share.is_array() || share.size() != names.size()) continue;
    if (routes.size() != names.size()) {
      routes.clear();
      for (const auto &name : names) routes.push_back({name.is_string() ? name.get<std::string>() : "?", {}, {}});
    }
    for (size_t r = 0; r < routes.size(); r++)
      if (share[r].is_number()) routes[r].points.emplace_back(step, share[r].get<double>());
  }
  replace_file(svg_path, training_svg({train, val}, routes));
}

}  // namespace moas_cli
