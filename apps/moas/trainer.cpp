#include "trainer.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <optional>

#include "counter_rng.hpp"
#include "errors.hpp"
#include "generate.hpp"
#include "handles.hpp"
#include "interrupt.hpp"
#include "metrics_log.hpp"
#include "number_text.hpp"
#include "run_lock.hpp"
#include "training_plot.hpp"

namespace moas_cli {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct Evaluation {
  double loss = 0;
  RoutingSummary routing;
};

// The mean loss over eval-batches windows of the validation split that are the same at every evaluation, so the
// curve moves only because the model does.
Evaluation evaluate(const TrainingSetup &s, std::vector<int32_t> &tokens, std::vector<int32_t> &targets) {
  const TrainOptions &o = s.options;
  RoutingAccumulator routing(s.config);
  double total = 0;
  for (int j = 0; j < o.eval_batches; j++) {
    fill_batch(s.corpus.val, o.block, o.batch, o.seed, kStreamValBatch, (uint64_t)j, tokens.data(), targets.data());
    float loss = 0;
    check_status(moas_forward(s.model, tokens.data(), targets.data(), o.batch, o.block, /*training=*/0, &loss, nullptr),
                 "moas_forward (validation)");
    total += loss;
    routing.add(s.model);
  }
  return {total / o.eval_batches, routing.summary()};
}

nlohmann::ordered_json routing_json(const RoutingSummary &routing) {
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const LayerRouting &layer : routing.layers)
    layers.push_back({{"share", layer.share}, {"top_share", layer.top_share}, {"mean_gate", layer.mean_gate},
                      {"balance", layer.balance}, {"collapsed", layer.collapsed}});
  return {{"routes", routing.route_names}, {"layers", layers}};
}

std::string attention_text(const moas_model_config &c) {
  if (c.attention == MOAS_ATTENTION_MOAS) {
    static const char *const kModes[] = {"static", "soft", "top-1"};
    std::string branches;
    for (const std::string &name : route_names(c)) branches += (branches.empty() ? "" : "/") + name;
    return std::string("MoAS ") + kModes[c.moas_mode] + " over " + branches + " (aux weight " +
           fixed(c.moas_aux_weight, "%g") + ")";
  }
  const std::string kind = c.n_kv_head == c.n_head ? "MHA"
                           : c.n_kv_head == 1      ? "MQA"
                                                   : "GQA (" + std::to_string(c.n_kv_head) + " kv heads)";
  if (c.attention != MOAS_ATTENTION_MOH) return kind;
  const moas_head_selection &hs = c.head_selection;
  if (hs.strategy == MOAS_HEADS_MIXTURE)
    return "MoH over " + kind + ": " + std::to_string(hs.num_shared_heads) + " shared + " +
           std::to_string(hs.num_active_routed_heads) + " of " + std::to_string(c.n_head - hs.num_shared_heads) +
           " routed heads (lb weight " + fixed(hs.load_balance_weight, "%g") + ")";
  if (hs.strategy == MOAS_HEADS_STATIC_PRUNING)
    return "MoH static pruning of " + kind + ": heads 0.." + std::to_string(hs.num_active_heads - 1);
  return "MoH all heads of " + kind;
}

// A word of a shell command, quoted when the shell would otherwise split or expand it.
std::string shell_word(const std::string &word) {
  const char *plain = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./+-=:,@%";
  if (!word.empty() && word.find_first_not_of(plain) == std::string::npos) return word;
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// The command that continues this invocation: its settings are in the checkpoint, but --stop-at is not.
std::string resume_command(const char *program, const TrainOptions &options) {
  return shell_word(program) + " train --resume --out " + shell_word(options.out) +
         (options.stop_at > 0 ? " --stop-at " + std::to_string(options.stop_at) : "");
}

int run_train(TrainOptions options, const ParsedOptions &parsed, const TrainOptions &defaults, const char *program) {
  RunFiles files(options.out);
  int start_step = 0;
  nlohmann::json stored;
  // --overwrite replaces whatever DIR holds, a damaged DIR/latest included.
  const std::optional<CheckpointPair> latest =
      options.resume || !options.overwrite ? latest_checkpoint(files) : std::nullopt;
  if (options.resume) {
    if (!latest)
      throw RuntimeFailure("no checkpoint in " + files.dir +
                           ": point --out at the run to continue, or train without --resume first");
    stored = read_checkpoint_metadata(latest->model);
    OptionValues values;
    for (auto it = stored["options"].begin(); it != stored["options"].end(); ++it)
      values[it.key()] = it->get<std::string>();
    options = resumed_options(values, defaults, parsed.assignments);
    start_step = stored["step"].get<int>();
    if (start_step >= options.steps)
      throw UsageError(latest->model + " is already at step " + std::to_string(start_step) + " of --steps " +
                       std::to_string(options.steps) + ": pass a larger --steps to train on");
    if (options.stop_at > 0 && options.stop_at <= start_step)
      throw UsageError("--stop-at " + std::to_string(options.stop_at) + " is not after the checkpoint's step " +
                       std::to_string(start_step));
  } else if (latest && !options.overwrite) {
    throw UsageError(files.dir + " already holds a checkpoint (" + latest->model + "): pass --resume to continue "
                     "it, --overwrite to replace it, or another --out");
  }

  const Corpus corpus = load_corpus(options);
  if (options.resume && stored["data"]["fingerprint"] != corpus.fingerprint)
    throw RuntimeFailure("the training text differs from the one " + latest->model + " was trained on (" +
                         stored["data"]["source"].get<std::string>() +
                         "): resume with the same --data, --val-data and --bytes");
  if (options.resume && stored["vocabulary"] != corpus.vocabulary.to_json())
    throw RuntimeFailure(latest->model + " records another vocabulary than its training text's: its metadata is "
                         "damaged; train again with --overwrite");
  const moas_model_config config = make_model_config(options, corpus.vocabulary.size());
  ModelPtr model = create_model(config);
  if (options.resume) restore_checkpoint(model.get(), *latest, start_step);

  std::printf("moas train: %s; training on %s\n", moas_build_info(), describe_device(options).c_str());
  std::printf("%s\n%s\n", describe_model(config, parameter_count(model.get())).c_str(),
              describe_training(options, corpus).c_str());
  if (options.resume) std::printf("resuming %s at step %d\n", latest->model.c_str(), start_step);
  std::fflush(stdout);
  const std::string warning = schedule_warning(options);
  if (!warning.empty()) std::fprintf(stderr, "moas: warning: %s\n", warning.c_str());

  Progress progress("");
  const TrainingSetup setup{options, corpus, model.get(), config, files, start_step};
  const auto start = std::chrono::steady_clock::now();
  const InterruptRequests interrupts;
  const TrainOutcome outcome = run_training(setup, progress);
  progress.finish();
  if (outcome.interrupted_by) {
    std::fprintf(stderr, "moas: interrupted by %s: saved the checkpoint of step %d in %s; continue with: %s\n",
                 signal_name(outcome.interrupted_by), outcome.last_step, files.dir.c_str(),
                 resume_command(program, options).c_str());
    return 128 + outcome.interrupted_by;
  }
  std::printf("done: steps %d-%d in %.1f s, %.0f tokens/s; train loss %.4f -> %.4f; val loss %.4f; %s\n",
              outcome.first_step + 1, outcome.last_step, seconds_since(start), outcome.tokens_per_s,
              outcome.first_train_loss, outcome.last_train_loss, outcome.val_loss, files.model.c_str());
  return 0;
}

}  // namespace

double learning_rate(const TrainOptions &o, int step) {
  if (step < o.warmup) return o.lr * (step + 1) / o.warmup;
  const int decay_steps = std::max(1, o.steps - 1 - o.warmup);
  const double progress = std::min(1.0, (double)(step - o.warmup) / decay_steps);
  const double lowest = resolved_min_lr(o);
  return lowest + 0.5 * (1.0 + std::cos(M_PI * progress)) * (o.lr - lowest);
}

std::string describe_model(const moas_model_config &c, uint64_t parameters) {
  static const char *const kNorms[] = {"LayerNorm", "RMSNorm"};
  static const char *const kMlps[] = {"GELU", "SwiGLU"};
  static const char *const kPositions[] = {"learned positions", "RoPE", "CoPE"};
  return "model: " + std::to_string(c.n_layer) + " layers, " + std::to_string(c.n_head) + " heads, width " +
         std::to_string(c.n_embd) + ", block " + std::to_string(c.block_size) + ", vocabulary " +
         std::to_string(c.vocab_size) + "; " + attention_text(c) + "; " + kNorms[c.norm] + ", " + kMlps[c.mlp] +
         ", " + kPositions[c.position] +
         (c.position == MOAS_POSITION_COPE ? " (" + std::to_string(c.cope_max_pos) + " positions)" : "") +
         (c.window_size > 0 ? ", window " + std::to_string(c.window_size) : "") + ", dropout " +
         fixed(c.dropout, "%g") + "; " + thousands(parameters) + " parameters";
}

std::string describe_training(const TrainOptions &o, const Corpus &corpus) {
  const moas_adamw_config adamw = make_adamw_config(o);
  return "data: " + corpus.source + ", " + thousands(corpus.train.size()) + " train / " +
         thousands(corpus.val.size()) + " val tokens\n" + "optimizer: AdamW lr " + fixed(o.lr, "%g") + " (warm-up " +
         std::to_string(o.warmup) + ", cosine to " + fixed(resolved_min_lr(o), "%g") + "), betas " +
         fixed(adamw.beta1, "%g") + "/" + fixed(adamw.beta2, "%g") + ", weight decay " +
         fixed(o.weight_decay, "%g") + ", clip " + fixed(o.clip, "%g") + "; batch " + std::to_string(o.batch) +
         " x " + std::to_string(o.block) + ", " + std::to_string(o.steps) + " steps, seed " + std::to_string(o.seed) +
         "; validation every " + std::to_string(resolved_eval_every(o)) + " steps on " +
         std::to_string(o.eval_batches) + " batches";
}

// The current time as ISO 8601 UTC, e.g. 2026-12-07T18:30:02Z.
std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  gmtime_r(&now, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

TrainOutcome run_training(const TrainingSetup &s, Progress &progress) {
  const TrainOptions &o = s.options;
  const int end_step = o.stop_at > 0 ? std::min(o.stop_at, o.steps) : o.steps;
  const int eval_every = resolved_eval_every(o), log_every = resolved_log_every(o);
  const int save_every = resolved_save_every(o);
  std::filesystem::create_directories(s.files.dir);
  const RunLock lock(s.files.dir);
  if (s.start_step == 0) discard_checkpoints(s.files);
  else tidy_checkpoints(s.files);
  MetricsLog metrics(s.files.metrics, s.start_step);
  moas_adamw_config adamw = make_adamw_config(o);
  std::vector<int32_t> tokens((size_t)o.batch * o.block), targets(tokens.size());

  TrainOutcome outcome;
  outcome.first_step = outcome.last_step = s.start_step;
  auto validate = [&](int step) {
    const Evaluation e = evaluate(s, tokens, targets);
    outcome.val_curve.emplace_back(step, e.loss);
    outcome.val_loss = e.loss;
    outcome.routing = e.routing;
    nlohmann::ordered_json entry = {{"step", step}, {"val_loss", e.loss}};
    if (e.routing.routed()) entry["routing"] = routing_json(e.routing);
    metrics.write(entry);
    write_training_plot(s.files.metrics, s.files.plot);
    const std::string routing = detailed_routing(e.routing);
    progress.line("step " + std::to_string(step) + "  val loss " + fixed(e.loss, "%.4f") +
                  (routing.empty() ? "" : "  " + routing));
  };
  // A glimpse of what the model has learnt: the same seed every time, so the samples change only as the model does.
  // Sampling runs in evaluation mode between steps and draws nothing from the training's random streams.
  auto show_sample = [&](int step) {
    constexpr int kSampleTokens = 100;
    SamplingSettings sampling;
    sampling.temperature = 0.8;
    sampling.seed = o.seed;
    std::vector<int32_t> sequence = {start_token(s.corpus.vocabulary)};
    std::string text;
    sample_continuation(s.model, sequence, kSampleTokens, sampling,
                        [&](int32_t token) { text += s.corpus.vocabulary.decode(token); });
    progress.line("sample at step " + std::to_string(step) + " (" + std::to_string(kSampleTokens) +
                  " tokens, temperature 0.8, seed " + std::to_string(o.seed) + "):\n" + text);
  };
  auto save = [&](int step) {
    metrics.sync();
    save_checkpoint(s.model, s.files, step, checkpoint_metadata(s.corpus, o, step));
    progress.line("saved the checkpoint of step " + std::to_string(step) + " in " + s.files.dir);
  };

  if (s.start_step == 0) validate(0);
  const auto start = std::chrono::steady_clock::now();
  double train_seconds = 0, interval_seconds = 0;
  int interval_steps = 0;
  const double tokens_per_step = (double)o.batch * o.block;
  for (int step = s.start_step; step < end_step; step++) {
    const auto step_start = std::chrono::steady_clock::now();
    adamw.lr = (float)learning_rate(o, step);
    fill_batch(s.corpus.train, o.block, o.batch, o.seed, kStreamTrainBatch, (uint64_t)step, tokens.data(),
               targets.data());
    float loss = 0, aux = 0, grad_norm = 0;
    check_status(moas_zero_grad(s.model), "moas_zero_grad");
    check_status(moas_forward(s.model, tokens.data(), targets.data(), o.batch, o.block, /*training=*/1, &loss, &aux),
                 "moas_forward");
    check_status(moas_backward(s.model), "moas_backward");
    const moas_status status = moas_optimizer_step(s.model, &adamw, &grad_norm);
    if (status == MOAS_ERR_NON_FINITE)
      throw RuntimeFailure("step " + std::to_string(step + 1) + ": the gradient is not finite (training diverged): "
                           "lower --lr or --clip, or lengthen --warmup; the last saved checkpoint is kept");
    check_status(status, "moas_optimizer_step");
    const double seconds = seconds_since(step_start);
    train_seconds += seconds;
    interval_seconds += seconds;
    interval_steps++;

    const int done = step + 1;
    if (done == s.start_step + 1) outcome.first_train_loss = loss;
    outcome.last_train_loss = loss;
    outcome.last_step = done;
    const bool logged = done % log_every == 0 || done == end_step;
    const double interval_rate = interval_steps * tokens_per_step / std::max(interval_seconds, 1e-9);
    if (logged) {
      // Timing last: everything before tokens_per_s is the same bits in a resumed run as in a straight one.
      metrics.write({{"step", done}, {"lr", adamw.lr}, {"train_loss", loss}, {"aux", aux}, {"grad_norm", grad_norm},
                     {"tokens_per_s", interval_rate}, {"elapsed_s", seconds_since(start)}, {"time", utc_now()}});
      interval_seconds = 0;
      interval_steps = 0;
    }
    RoutingAccumulator routing(s.config);
    routing.add(s.model);
    StepReport report;
    report.step = done;
    report.steps = o.steps;
    report.train_loss = loss;
    if (!outcome.val_curve.empty()) {
      report.val_loss = outcome.val_loss;
      report.val_step = outcome.val_curve.back().first;
    }
    report.lr = adamw.lr;
    report.tokens_per_s = interval_rate;
    report.eta_s = seconds_since(start) / (done - s.start_step) * (end_step - done);
    report.routing = compact_routing(routing.summary());
    progress.step(report, logged);

    if (done % eval_every == 0 || done == end_step) validate(done);
    if (o.sample_every > 0 && done % o.sample_every == 0) show_sample(done);
    const int interrupt = done == end_step ? 0 : requested_interrupt();  // a finished run was not interrupted
    if (done == end_step || (save_every > 0 && done % save_every == 0) || interrupt) save(done);
    if (interrupt) {
      outcome.interrupted_by = interrupt;
      break;
    }
  }
  outcome.tokens_per_s = (outcome.last_step - s.start_step) * tokens_per_step / std::max(train_seconds, 1e-9);
  return outcome;
}

int run_train_command(int argc, char **argv) {
  const ParsedOptions parsed = parse_train_arguments(argc, argv, 2, /*for_compare=*/false);
  if (parsed.help) {
    std::fputs(train_help(false).c_str(), stdout);
    return 0;
  }
  const TrainOptions defaults = default_train_options("runs/train");
  TrainOptions options = defaults;
  apply_settings(options, parsed.assignments);
  return run_train(options, parsed, defaults, argv[0]);
}

}  // namespace moas_cli
