// The flags of a training run besides the model's: optimiser, data, the run itself (may change on --resume) and this
// invocation; the --paper preset; and the AdamW config they make.
#include <sched.h>

#include <algorithm>
#include <thread>

#include "errors.hpp"
#include "flag_spec.hpp"

namespace moas_cli {

void add_train_flags(std::vector<OptionSpec> &t) {
  using S = OptionScope;
  using O = TrainOptions;
  t.push_back(number("batch", S::Optimizer, &O::batch, 1, 1 << 20, "sequences per step"));
  t.push_back(number("steps", S::Optimizer, &O::steps, 1, kBig, "optimizer steps (the schedule's length)"));
  t.push_back(number("lr", S::Optimizer, &O::lr, 1e-12, 10, "peak learning rate"));
  t.push_back(number("min-lr", S::Optimizer, &O::min_lr, 0, 10,
                     "learning rate at the end of the cosine decay (auto: lr/10)", true));
  t.push_back(number("warmup", S::Optimizer, &O::warmup, 0, kBig, "linear warm-up steps"));
  t.push_back(number("weight-decay", S::Optimizer, &O::weight_decay, 0, 10, "AdamW decoupled weight decay"));
  t.push_back(number("clip", S::Optimizer, &O::clip, 0, 1e9, "global gradient-norm bound (0: none)"));
  t.push_back(OptionSpec{"seed", S::Optimizer, &O::seed});  // any uint64_t
  t.back().help = "seed of the weights, dropout, batches and the generated task";
  t.push_back(text("data", S::Data, &O::data, {},
                   "UTF-8 text file, or a directory of token files (default: the generated recall/copy task):\n"
                   "                          DIR/train.bin and DIR/val.bin hold little-endian uint16 token ids\n"
                   "                          (nanoGPT's prepare.py; llm.c's 1024-byte header is skipped), and\n"
                   "                          DIR/meta.json (or --vocab-size) gives {\"vocab_size\": N, optional\n"
                   "                          \"tokenizer\": NAME, optional \"decode\": [the text of each id]}"));
  t.back().allows_empty = true;
  t.push_back(text("val-data", S::Data, &O::val_data, {},
                   "UTF-8 text file that validates, in --data's vocabulary (default: --data's last tenth)"));
  t.back().allows_empty = true;
  t.push_back(number("vocab-size", S::Data, &O::vocab_size, 1, 65536,
                     "token ids of a --data directory (auto: its meta.json's vocab_size)", true));
  t.push_back(toggle("bytes", S::Data, &O::bytes, "byte vocabulary (256) instead of the text's characters"));
  t.push_back(number("threads", S::Run, &O::threads, 0, 4096, "CPU threads (0: all cores)"));
  t.push_back(text("device", S::Run, &O::device, kDeviceNames, "where training runs (cuda: GPU 0)"));
  t.push_back(text("matmul-precision", S::Run, &O::matmul_precision, kPrecisionNames,
                   "tf32 and bf16: tensor cores for a CUDA device's matrix products"));
  t.push_back(number("eval-every", S::Run, &O::eval_every, 1, kBig, "steps between validations (auto: steps/10)",
                     true));
  t.push_back(number("eval-batches", S::Run, &O::eval_batches, 1, 1e6, "validation batches (fixed windows)"));
  t.push_back(number("log-every", S::Run, &O::log_every, 1, kBig,
                     "steps between log lines and metrics.jsonl entries (auto: steps/10)", true));
  t.push_back(number("save-every", S::Run, &O::save_every, 0, kBig,
                     "steps between checkpoints (auto: at every validation; 0: only at the end)", true));
  t.push_back(number("sample-every", S::Run, &O::sample_every, 0, kBig,
                     "steps between 100-token samples printed from the model (0: none)"));
  t.push_back(number("stop-at", S::Invocation, &O::stop_at, 0, kBig,
                     "end this invocation after that step (0: --steps); continue later with --resume"));
  t.push_back(text("out", S::Invocation, &O::out, {}, "output directory"));
  t.push_back(toggle("resume", S::Invocation, &O::resume, "continue the checkpoint in --out exactly"));
  t.push_back(toggle("overwrite", S::Invocation, &O::overwrite, "replace a checkpoint already in --out"));
}

void set_optimizer_defaults(TrainOptions &o) {
  moas_adamw_config adamw;
  adamw.struct_size = sizeof adamw;
  check_status(moas_adamw_config_default(&adamw), "moas_adamw_config_default");
  o.weight_decay = decimal_of(adamw.weight_decay);
  o.clip = decimal_of(adamw.grad_clip);
}

// The paper's run (MoAS, nanoGPT shakespeare-char): applied before --config and flags, which may override it.
const std::vector<std::pair<std::string, std::string>> &paper_preset() {
  static const std::vector<std::pair<std::string, std::string>> preset = {
      {"layers", "6"},      {"heads", "6"},          {"width", "384"},   {"block", "256"},
      {"batch", "12"},      {"dropout", "0.2"},      {"lr", "1e-3"},     {"min-lr", "1e-4"},
      {"warmup", "100"},    {"steps", "2000"},       {"weight-decay", "0.1"}, {"clip", "1"},
      {"eval-every", "250"}, {"eval-batches", "200"}, {"position", "learned"}, {"norm", "layernorm"},
      {"mlp", "gelu"}};
  return preset;
}

const char *train_usage() {
  return "usage: moas train [flags]\n\n"
         "Trains a model into its --out directory DIR, which holds:\n"
         "  DIR/checkpoints/step-N/  the latest checkpoint: model.safetensors and model.optim.safetensors (AdamW)\n"
         "  DIR/latest               names that pair: moas train --resume --out DIR continues from it\n"
         "  DIR/model.safetensors    a hard link to its weights: moas generate --checkpoint DIR reads them\n"
         "  DIR/metrics.jsonl        a JSON line per logged step and validation\n"
         "  DIR/train.svg            loss and routing against step, redrawn at every validation\n"
         "A save writes a new pair, switches DIR/latest to it, and only then deletes the old one, so a kill at any\n"
         "moment leaves a complete pair to resume from. Ctrl-C or SIGTERM saves at the next step boundary, prints\n"
         "the command that continues the run and exits with 128 + the signal's number (130, 143); a second Ctrl-C\n"
         "ends it at once.\n\n";
}

const char *progress_legend() {
  return "Progress lines show the last validation loss with the step it measured (val 1.2345 @ step 500) and, for\n"
         "a routed model, each layer's route shares in percent and its balance b (1: even, 1/routes: collapsed).\n"
         "Validation lines show each layer's routing route by route: for MoAS the share of tokens whose top\n"
         "branch it is and its mean gate (argmax% | gate%, each summing to 100); for MoH each routed head's share\n"
         "of the active routed slots (share%, summing to 100) and its mean gate weight, the factor its output is\n"
         "scaled by averaged over all tokens (0 where inactive): a plain number, which may exceed 1.\n\n";
}

int resolved_eval_every(const TrainOptions &options) {
  return options.eval_every != kAuto ? options.eval_every : std::max(1, options.steps / 10);
}

double resolved_min_lr(const TrainOptions &options) {
  return options.min_lr != kAuto ? options.min_lr : options.lr / 10;
}

std::string schedule_warning(const TrainOptions &o) {
  if (o.warmup < o.steps) return "";
  return "--warmup " + std::to_string(o.warmup) + " is not below --steps " + std::to_string(o.steps) +
         ": the whole run stays in the linear warm-up (the learning rate climbs toward --lr and never decays); "
         "lower --warmup (e.g. --warmup " + std::to_string(o.steps / 10) + ") or raise --steps";
}

int resolved_save_every(const TrainOptions &options) {
  return options.save_every != kAuto ? options.save_every : resolved_eval_every(options);
}

int resolved_log_every(const TrainOptions &options) {
  return options.log_every != kAuto ? options.log_every : std::max(1, options.steps / 10);
}

moas_adamw_config make_adamw_config(const TrainOptions &o) {
  moas_adamw_config a;
  a.struct_size = sizeof a;
  check_status(moas_adamw_config_default(&a), "moas_adamw_config_default");
  a.lr = (float)o.lr;
  a.weight_decay = (float)o.weight_decay;
  a.grad_clip = (float)o.clip;
  return a;
}

namespace {

int cores_available() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  return (int)std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

int effective_threads(int requested) { return requested > 0 ? requested : cores_available(); }

std::string describe_device(const TrainOptions &o) {
  if (o.device == "cuda") return "CUDA device 0, " + o.matmul_precision + " products";
  return std::to_string(effective_threads(o.threads)) + " CPU threads";
}

}  // namespace moas_cli
