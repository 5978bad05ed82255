#include "compare.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint.hpp"
#include "dataset.hpp"
#include "durable_file.hpp"
#include "errors.hpp"
#include "flag_spec.hpp"
#include "handles.hpp"
#include "number_text.hpp"
#include "options.hpp"
#include "svg_plot.hpp"
#include "trainer.hpp"

namespace moas_cli {

namespace {

struct Variant {
  std::string name;
  TrainOptions options;
};

// One variant's run with one seed.
struct SeedRun {
  uint64_t seed = 0;
  double val_loss = 0;
  double tokens_per_s = 0;
  RoutingSummary routing;
  std::vector<std::pair<int, double>> curve;
};

struct VariantResult {
  std::string name;
  uint64_t parameters = 0;
  uint64_t kv_bytes_per_token = 0;
  std::vector<SeedRun> runs;
};

struct MeanStd {
  double mean = 0, std = 0;  // std: the sample standard deviation (n - 1), 0 for one value
};

MeanStd mean_std(const std::vector<double> &values) {
  MeanStd m;
  for (double v : values) m.mean += v / (double)values.size();
  if (values.size() < 2) return m;
  for (double v : values) m.std += (v - m.mean) * (v - m.mean) / (double)(values.size() - 1);
  m.std = std::sqrt(m.std);
  return m;
}

template <typename Field>
MeanStd over_runs(const VariantResult &r, Field field) {
  std::vector<double> values;
  for (const SeedRun &run : r.runs) values.push_back(field(run));
  return mean_std(values);
}

// Every layer's statistics averaged over the seeds (a layer collapsed if it did with any seed).
RoutingSummary mean_routing(const VariantResult &r) {
  RoutingSummary mean = r.runs.front().routing;
  for (size_t l = 0; l < mean.layers.size(); l++) {
    LayerRouting &layer = mean.layers[l];
    for (size_t i = 0; i < layer.share.size(); i++) {
      layer.share[i] = over_runs(r, [&](const SeedRun &s) { return s.routing.layers[l].share[i]; }).mean;
      layer.top_share[i] = over_runs(r, [&](const SeedRun &s) { return s.routing.layers[l].top_share[i]; }).mean;
      layer.mean_gate[i] = over_runs(r, [&](const SeedRun &s) { return s.routing.layers[l].mean_gate[i]; }).mean;
    }
    layer.balance = over_runs(r, [&](const SeedRun &s) { return s.routing.layers[l].balance; }).mean;
    for (const SeedRun &s : r.runs) layer.collapsed = layer.collapsed || s.routing.layers[l].collapsed;
  }
  return mean;
}

// The validation curve's mean and std at each step (every seed validates at the same steps).
LossCurve mean_curve(const VariantResult &r) {
  LossCurve curve{r.name, {}, {}, false};
  for (size_t i = 0; i < r.runs.front().curve.size(); i++) {
    const MeanStd m = over_runs(r, [&](const SeedRun &s) { return s.curve[i].second; });
    curve.points.emplace_back(r.runs.front().curve[i].first, m.mean);
    if (r.runs.size() > 1) curve.spread.push_back(m.std);
  }
  return curve;
}

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

std::vector<Variant> all_variants(const TrainOptions &base, bool branches_given) {
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
  for (const char *strategy : {"mixture", "all"}) {
    Variant moh{std::string(strategy) == "all" ? "moh-all" : "moh", base};
    moh.options.attention = "moh";
    moh.options.heads_strategy = strategy;
    moh.options.kv_heads = base.heads;
    variants.push_back(moh);
  }
  return variants;
}

// --variants in the order given, or every variant but moh-all (which trains as MHA does).
std::vector<Variant> chosen_variants(const TrainOptions &base, bool branches_given) {
  std::vector<Variant> all = all_variants(base, branches_given), chosen;
  if (base.variants.empty()) {
    for (const Variant &v : all)
      if (v.name != "moh-all") chosen.push_back(v);
    return chosen;
  }
  std::stringstream list(base.variants);
  std::string name;
  while (std::getline(list, name, ',')) {
    auto known = std::find_if(all.begin(), all.end(), [&](const Variant &v) { return v.name == name; });
    if (known == all.end())
      throw UsageError("--variants: unknown variant '" + name + "' (choose from " +
                       choice_list(compare_variant_names()) + ", comma-separated)");
    for (const Variant &v : chosen)
      if (v.name == name) throw UsageError("--variants names " + name + " twice");
    chosen.push_back(*known);
  }
  if (chosen.empty()) throw UsageError("--variants names no variant");
  return chosen;
}

std::string markdown_table(const std::vector<VariantResult> &results, int seeds) {
  std::string table = std::string("| variant | ") +
                      (seeds > 1 ? "val loss (mean ± std, " + std::to_string(seeds) + " seeds)" : "val loss") +
                      " | parameters | tokens/s | KV bytes/token | routing (last layer) |\n"
                      "|---|---:|---:|---:|---:|---|\n";
  for (const VariantResult &r : results) {
    const MeanStd loss = over_runs(r, [](const SeedRun &s) { return s.val_loss; });
    table += "| " + r.name + " | " + fixed(loss.mean, "%.4f") + (seeds > 1 ? " ± " + fixed(loss.std, "%.4f") : "") +
             " | " + thousands(r.parameters) + " | " +
             thousands((uint64_t)(over_runs(r, [](const SeedRun &s) { return s.tokens_per_s; }).mean + 0.5)) + " | " +
             thousands(r.kv_bytes_per_token) + " | " + last_layer_routing(mean_routing(r)) + " |\n";
  }
  return table;
}

nlohmann::ordered_json routing_json(const RoutingSummary &routing) {
  const LayerRouting &last = routing.layers.back();
  return {{"routes", routing.route_names}, {"share", last.share},     {"top_share", last.top_share},
          {"mean_gate", last.mean_gate},   {"balance", last.balance}, {"collapsed", last.collapsed}};
}

nlohmann::ordered_json results_json(const TrainOptions &base, const std::string &data,
                                    const std::vector<VariantResult> &results, double seconds) {
  nlohmann::ordered_json variants = nlohmann::ordered_json::array();
  for (const VariantResult &r : results) {
    const MeanStd loss = over_runs(r, [](const SeedRun &s) { return s.val_loss; });
    const LossCurve curve = mean_curve(r);
    nlohmann::ordered_json runs = nlohmann::ordered_json::array();
    for (const SeedRun &s : r.runs) {
      nlohmann::ordered_json run = {{"seed", s.seed},
                                    {"val_loss", s.val_loss},
                                    {"tokens_per_s", s.tokens_per_s},
                                    {"val_curve", s.curve}};
      if (s.routing.routed()) run["routing_last_layer"] = routing_json(s.routing);
      runs.push_back(run);
    }
    nlohmann::ordered_json v = {{"variant", r.name},
                                {"val_loss", loss.mean},
                                {"val_loss_std", loss.std},
                                {"parameters", r.parameters},
                                {"tokens_per_s", over_runs(r, [](const SeedRun &s) { return s.tokens_per_s; }).mean},
                                {"kv_bytes_per_token", r.kv_bytes_per_token},
                                {"val_curve", curve.points},
                                {"val_curve_std", curve.spread}};
    if (r.runs.front().routing.routed()) v["routing_last_layer"] = routing_json(mean_routing(r));
    v["runs"] = runs;
    variants.push_back(v);
  }
  return {{"data", data},
          {"settings", option_values(base)},
          {"seeds", base.seeds},
          {"seconds", seconds},
          {"std", "sample standard deviation over seeds (n - 1); 0 for one seed"},
          {"variants", variants}};
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
  const std::vector<Variant> variants = chosen_variants(base, branches_given);

  // Every variant's config is checked before any trains, so a bad flag costs nothing. The data may depend on the
  // seed (the generated task does), so each seed loads its own.
  Corpus corpus = load_corpus(base);
  for (const Variant &v : variants) create_model(make_model_config(v.options, corpus.vocabulary.size()));

  std::printf("moas compare: %s; training %zu variants x %d seed%s on %s\n", moas_build_info(), variants.size(),
              base.seeds, base.seeds > 1 ? "s" : "", describe_device(base).c_str());
  std::printf("%s\n", describe_training(base, corpus).c_str());
  std::fflush(stdout);
  const std::string warning = schedule_warning(base);
  if (!warning.empty()) std::fprintf(stderr, "moas: warning: %s\n", warning.c_str());

  const auto start = std::chrono::steady_clock::now();
  std::vector<VariantResult> results(variants.size());
  const int total_runs = (int)variants.size() * base.seeds;
  // Seeds outermost: after every round each variant has the same number of runs.
  for (int k = 0; k < base.seeds; k++) {
    const uint64_t seed = base.seed + (uint64_t)k;
    if (k > 0) {
      TrainOptions seeded = base;
      seeded.seed = seed;
      corpus = load_corpus(seeded);
    }
    for (size_t i = 0; i < variants.size(); i++) {
      TrainOptions options = variants[i].options;
      options.seed = seed;
      const std::string &name = variants[i].name;
      const moas_model_config config = make_model_config(options, corpus.vocabulary.size());
      ModelPtr model = create_model(config);
      VariantResult &result = results[i];
      result.name = name;
      result.parameters = parameter_count(model.get());
      result.kv_bytes_per_token = kv_cache_bytes_per_token(model.get());
      const int run = k * (int)variants.size() + (int)i + 1;
      Progress progress("[" + name + (base.seeds > 1 ? " seed " + std::to_string(seed) : "") + " " +
                        std::to_string(run) + "/" + std::to_string(total_runs) + "] ");
      progress.line(describe_model(config, result.parameters));
      const std::string dir = base.out + "/" + name + (base.seeds > 1 ? "/seed-" + std::to_string(seed) : "");
      const TrainingSetup setup{options, corpus, model.get(), config, RunFiles(dir), 0};
      const TrainOutcome outcome = run_training(setup, progress);
      progress.finish();
      result.runs.push_back({seed, outcome.val_loss, outcome.tokens_per_s, outcome.routing, outcome.val_curve});
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::vector<LossCurve> curves;
  std::vector<ShareBars> bars;
  for (size_t i = 0; i < results.size(); i++) {
    const VariantResult &r = results[i];
    curves.push_back(mean_curve(r));
    if (!r.runs.front().routing.routed()) continue;
    ShareBars group{r.name, (int)i, r.runs.front().routing.route_names, mean_routing(r).layers.back().share, {}};
    if (r.runs.size() > 1)
      for (size_t route = 0; route < group.shares.size(); route++)
        group.spread.push_back(
            over_runs(r, [&](const SeedRun &s) { return s.routing.layers.back().share[route]; }).std);
    bars.push_back(group);
  }
  std::filesystem::create_directories(base.out);
  const std::string svg_path = base.out + "/compare.svg", json_path = base.out + "/compare.json";
  replace_file(svg_path, comparison_svg(curves, bars));
  replace_file(json_path, results_json(base, corpus.source, results, seconds).dump(2) + "\n");

  std::printf("\n%zu variants x %d seed%s, %d steps each, in %.0f s; wrote %s and %s\n\n%s", results.size(),
              base.seeds, base.seeds > 1 ? "s" : "", base.steps, seconds, svg_path.c_str(), json_path.c_str(),
              markdown_table(results, base.seeds).c_str());
  return 0;
}

}  // namespace moas_cli
