#include "compare.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint.hpp"
#include "dataset.hpp"
#include "durable_file.hpp"
#include "errors.hpp"
#include "handles.hpp"
#include "options.hpp"
#include "svg_plot.hpp"
#include "trainer.hpp"

namespace moas_cli {

namespace {

struct Variant {
  std::string name;
  TrainOptions options;
};

struct VariantResult {
  std::string name;
  double val_loss = 0;
  uint64_t parameters = 0;
  double tokens_per_s = 0;
  uint64_t kv_bytes_per_token = 0;
  RoutingSummary routing;
  std::vector<std::pair<int, double>> curve;
};

// GQA's kv heads: --kv-heads when given, else the smallest divisor of --heads above 1 (2 for 4 or 6 heads).
int gqa_kv_heads(const TrainOptions &o) {
  if (o.kv_heads != kAuto) {
    if (o.kv_heads <= 1 || o.kv_heads >= o.heads || o.heads % o.kv_heads != 0)
      throw UsageError("--kv-heads " + std::to_string(o.kv_heads) + " is not a GQA size for " +
                       std::to_string(o.heads) + " heads: give a divisor of --heads between 1 and it");
    return o.kv_heads;
  }
  for (int d = 2; d < o.heads; d++)
    if (o.heads % d == 0) return d;
  throw UsageError("moas compare needs --heads with a divisor between 1 and itself (e.g. 4 or 6) for its GQA variant");
}

std::vector<Variant> variants_of(const TrainOptions &base, bool branches_given) {
  const int gqa = gqa_kv_heads(base);
  std::vector<Variant> variants;
  auto scheme = [&](const char *name, int kv_heads) {
    Variant v{name, base};
    v.options.attention = "scheme";
    v.options.kv_heads = kv_heads;
    variants.push_back(v);
  };
  scheme("mha", base.heads);
  scheme("gqa", gqa);
  scheme("mqa", 1);
  for (const char *mode : {"static", "soft", "top1"}) {
    Variant v{std::string("moas-") + mode, base};
    v.options.attention = "moas";
    v.options.moas_mode = mode;
    if (!branches_given) v.options.branches = "0," + std::to_string(gqa) + ",1";
    variants.push_back(v);
  }
  Variant moh{"moh", base};
  moh.options.attention = "moh";
  moh.options.heads_strategy = "mixture";
  moh.options.kv_heads = base.heads;
  variants.push_back(moh);
  return variants;
}

std::string thousands(double value) {
  std::string digits = std::to_string((unsigned long long)(value + 0.5)), out;
  for (size_t i = 0; i < digits.size(); i++) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string markdown_table(const std::vector<VariantResult> &results) {
  std::string table =
      "| variant | val loss | parameters | tokens/s | KV bytes/token | routing (last layer) |\n"
      "|---|---:|---:|---:|---:|---|\n";
  char loss[32];
  for (const VariantResult &r : results) {
    std::snprintf(loss, sizeof loss, "%.4f", r.val_loss);
    table += "| " + r.name + " | " + loss + " | " + thousands((double)r.parameters) + " | " +
             thousands(r.tokens_per_s) + " | " + thousands((double)r.kv_bytes_per_token) + " | " +
             last_layer_routing(r.routing) + " |\n";
  }
  return table;
}

nlohmann::ordered_json results_json(const TrainOptions &base, const Corpus &corpus,
                                    const std::vector<VariantResult> &results, double seconds) {
  nlohmann::ordered_json variants = nlohmann::ordered_json::array();
  for (const VariantResult &r : results) {
    nlohmann::ordered_json v = {{"variant", r.name},
                        {"val_loss", r.val_loss},
                        {"parameters", r.parameters},
                        {"tokens_per_s", r.tokens_per_s},
                        {"kv_bytes_per_token", r.kv_bytes_per_token},
                        {"val_curve", r.curve}};
    if (r.routing.routed()) {
      const LayerRouting &last = r.routing.layers.back();
      v["routing_last_layer"] = {{"routes", r.routing.route_names}, {"share", last.share},
                                 {"top_share", last.top_share},     {"mean_gate", last.mean_gate},
                                 {"balance", last.balance},         {"collapsed", last.collapsed}};
    }
    variants.push_back(v);
  }
  return {{"data", corpus.source}, {"settings", option_values(base)}, {"seconds", seconds}, {"variants", variants}};
}

}  // namespace

int run_compare_command(int argc, char **argv) {
  const ParsedOptions parsed = parse_train_arguments(argc, argv, 2, /*for_compare=*/true);
  if (parsed.help) {
    std::fputs(train_help(true).c_str(), stdout);
    return 0;
  }
  TrainOptions base = default_train_options("runs/compare");
  apply_settings(base, parsed.assignments);
  bool branches_given = false;
  for (const auto &assignment : parsed.assignments) branches_given = branches_given || assignment.first == "branches";
  const std::vector<Variant> variants = variants_of(base, branches_given);

  const Corpus corpus = load_corpus(base);
  // Every variant's config is checked before any trains, so a bad flag costs nothing.
  std::vector<moas_model_config> configs;
  for (const Variant &v : variants) {
    configs.push_back(make_model_config(v.options, corpus.vocabulary.size()));
    create_model(configs.back());
  }

  std::printf("moas compare: %s; training %zu variants on %s\n", moas_build_info(), variants.size(),
              describe_device(base).c_str());
  std::printf("%s\n", describe_training(base, corpus).c_str());
  std::fflush(stdout);
  const std::string warning = schedule_warning(base);
  if (!warning.empty()) std::fprintf(stderr, "moas: warning: %s\n", warning.c_str());

  const auto start = std::chrono::steady_clock::now();
  std::vector<VariantResult> results;
  for (size_t i = 0; i < variants.size(); i++) {
    const Variant &v = variants[i];
    ModelPtr model = create_model(configs[i]);
    VariantResult result;
    result.name = v.name;
    result.parameters = parameter_count(model.get());
    result.kv_bytes_per_token = kv_cache_bytes_per_token(model.get());
    Progress progress("[" + v.name + " " + std::to_string(i + 1) + "/" + std::to_string(variants.size()) + "] ");
    progress.line(describe_model(configs[i], result.parameters));
    const TrainingSetup setup{v.options, corpus, model.get(), configs[i], RunFiles(base.out + "/" + v.name), 0};
    const TrainOutcome outcome = run_training(setup, progress);
    progress.finish();
    result.val_loss = outcome.val_loss;
    result.tokens_per_s = outcome.tokens_per_s;
    result.routing = outcome.routing;
    result.curve = outcome.val_curve;
    results.push_back(result);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::vector<LossCurve> curves;
  std::vector<ShareBars> bars;
  for (size_t i = 0; i < results.size(); i++) {
    const VariantResult &r = results[i];
    LossCurve curve{r.name, {}};
    for (const auto &[step, loss] : r.curve) curve.points.emplace_back(step, loss);
    curves.push_back(curve);
    if (r.routing.routed()) bars.push_back({r.name, (int)i, r.routing.route_names, r.routing.layers.back().share});
  }
  std::filesystem::create_directories(base.out);
  const std::string svg_path = base.out + "/compare.svg", json_path = base.out + "/compare.json";
  replace_file(svg_path, comparison_svg(curves, bars));
  replace_file(json_path, results_json(base, corpus, results, seconds).dump(2) + "\n");

  std::printf("\n%zu variants, %d steps each, in %.0f s; wrote %s and %s\n\n%s", results.size(), base.steps, seconds,
              svg_path.c_str(), json_path.c_str(), markdown_table(results).c_str());
  return 0;
}

}  // namespace moas_cli
