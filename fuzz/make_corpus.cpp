// Writes the fuzzers' seed corpora: fuzz/corpus/<target>/, a few intact files of tiny models and a few damaged
// ones, each a few KB. Deterministic (the models come from fixed seeds), so regenerating changes nothing unless the
// library's file format or version string does: build-fuzz/fuzz/moas_fuzz_corpus fuzz/corpus
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "checkpoint/hostile_files.hpp"
#include "moas.h"

namespace fs = std::filesystem;
using hostile::Bytes;
using hostile::Safetensors;
using nlohmann::ordered_json;

namespace {

void check(moas_status status, const char *what) {
  if (status != MOAS_OK) throw std::runtime_error(std::string(what) + ": " + moas_last_error());
}

// A model of `cfg` after one training step, and its checkpoint and optimiser state.
struct Saved {
  Bytes model, optimizer;
};

Saved save(const moas_model_config &cfg, const fs::path &scratch) {
  moas_model *m = nullptr;
  check(moas_model_create(&cfg, &m), "moas_model_create");
  moas_adamw_config adamw;
  adamw.struct_size = sizeof adamw;
  check(moas_adamw_config_default(&adamw), "moas_adamw_config_default");
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8}, targets = {2, 3, 4, 5, 6, 7, 8, 9};
  check(moas_forward(m, tokens.data(), targets.data(), 1, 8, 1, nullptr, nullptr), "moas_forward");
  check(moas_backward(m), "moas_backward");
  check(moas_optimizer_step(m, &adamw, nullptr), "moas_optimizer_step");
  const std::string model_path = (scratch / "m.safetensors").string();
  const std::string optim_path = (scratch / "o.safetensors").string();
  check(moas_model_save(m, model_path.c_str(), nullptr), "moas_model_save");
  check(moas_optimizer_save(m, optim_path.c_str()), "moas_optimizer_save");
  moas_model_destroy(m);
  return {hostile::read_bytes(model_path), hostile::read_bytes(optim_path)};
}

void put(const fs::path &dir, const std::string &name, const Bytes &bytes) {
  fs::create_directories(dir);
  hostile::write_bytes((dir / name).string(), bytes);
}

void put_text(const fs::path &dir, const std::string &name, const std::string &text) {
  put(dir, name, Bytes(text.begin(), text.end()));
}

Bytes edited(const Bytes &file, void (*edit)(Safetensors &)) {
  Safetensors f = Safetensors::parse(file);
  edit(f);
  return f.build();
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR (e.g. fuzz/corpus)\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1], scratch = fs::temp_directory_path() / "moas_fuzz_corpus_scratch";
  fs::create_directories(scratch);
  moas_model_config scheme = hostile::tiny_config();
  scheme.attention = MOAS_ATTENTION_SCHEME;
  scheme.n_kv_head = 1;
  scheme.position = MOAS_POSITION_LEARNED;
  moas_model_config cope = hostile::tiny_config();
  cope.position = MOAS_POSITION_COPE;
  cope.cope_max_pos = 4;
  cope.window_size = 3;
  cope.norm = MOAS_NORM_RMSNORM;
  cope.mlp = MOAS_MLP_SWIGLU;
  const Saved moas = save(hostile::tiny_config(), scratch), moh = save(hostile::tiny_moh_config(), scratch),
              gqa = save(scheme, scratch), cope_model = save(cope, scratch);

  const fs::path checkpoint = out / "checkpoint";
  put(checkpoint, "valid-moas-rope", moas.model);
  put(checkpoint, "valid-moh", moh.model);
  put(checkpoint, "valid-mqa-learned", gqa.model);
  put(checkpoint, "valid-cope-window-swiglu", cope_model.model);
  put(checkpoint, "truncated-data", hostile::prefix(moas.model, moas.model.size() / 2));
  put(checkpoint, "nan-weight", edited(moas.model, [](Safetensors &f) {
        f.set_float("transformer.ln_f.weight", 0, std::nanf(""));
      }));
  put(checkpoint, "dtype-i32", edited(moas.model, [](Safetensors &f) {
        f.entry("transformer.ln_f.weight")["dtype"] = "I32";
      }));
  put(checkpoint, "extra-tensor", edited(moas.model, [](Safetensors &f) {
        f.add_tensor("transformer.h.1.ln_1.weight", "F32", {8}, Bytes(32, 0));
      }));
  put(checkpoint, "config-24-layers-1024-wide", edited(moas.model, [](Safetensors &f) {
        ordered_json c = f.config();
        c["n_layer"] = 24;
        c["n_embd"] = 1024;
        c["mlp_hidden"] = 4096;
        f.set_config(c);
      }));
  put(checkpoint, "config-rope-base-string", edited(moas.model, [](Safetensors &f) {
        ordered_json c = f.config();
        c["rope_base"] = "500000";
        f.set_config(c);
      }));
  {
    const Safetensors f = Safetensors::parse(moas.model);
    const std::string text = f.header_text();
    put(checkpoint, "bom", hostile::file_of("\xef\xbb\xbf" + text, f.data));
    put(checkpoint, "nul-after-header", hostile::file_of(text + std::string(1, '\0') + "x", f.data));
  }

  const fs::path optimizer = out / "optimizer";
  put(optimizer, "valid", moas.optimizer);
  put(optimizer, "truncated", hostile::prefix(moas.optimizer, moas.optimizer.size() - 100));
  put(optimizer, "negative-exp-avg-sq", edited(moas.optimizer, [](Safetensors &f) {
        f.set_float("transformer.ln_f.weight.exp_avg_sq", 2, -1.0f);
      }));
  put(optimizer, "missing-tensor", edited(moas.optimizer, [](Safetensors &f) {
        f.remove_tensor("transformer.wte.weight.exp_avg");
      }));
  put(optimizer, "step-not-a-count", edited(moas.optimizer, [](Safetensors &f) { f.metadata()["step"] = "x1"; }));

  const fs::path config = out / "config_json";
  int n = 0;
  for (const Saved *s : {&moas, &moh, &gqa, &cope_model})
    put_text(config, "valid-" + std::to_string(n++), Safetensors::parse(s->model).config().dump());
  ordered_json c = Safetensors::parse(moas.model).config();
  c["rope_base"] = "500000";
  c["seed"] = -1;
  put_text(config, "wrong-types", c.dump());
  c = Safetensors::parse(moas.model).config();
  c["moas_branch_kv_heads"] = {0, 4294967298u, 1};
  c["n_layer"] = int64_t(1) << 40;
  put_text(config, "out-of-range", c.dump());
  c = Safetensors::parse(moas.model).config();
  c["n_layer"] = 24;
  c["n_embd"] = 1024;
  put_text(config, "large-model", c.dump());

  const fs::path cli = out / "cli_config";
  put_text(cli, "small", R"({"layers": 2, "heads": 4, "width": 64, "block": 32, "steps": 100, "lr": 0.003})");
  put_text(cli, "paper", R"({"paper": true, "attention": "moas", "moas-mode": "top1", "branches": "6,2,1"})");
  put_text(cli, "moh", R"({"attention": "moh", "heads-strategy": "mixture", "shared-heads": 1,
    "active-heads": "auto", "lb-weight": 0.01, "kv-heads": 2, "position": "cope", "cope-max-pos": 16})");
  put_text(cli, "run", R"({"threads": 1, "device": "cpu", "matmul-precision": "fp32", "eval-every": "auto",
    "seed": 18446744073709551615, "data": "", "bytes": true, "min-lr": 0.0001, "save-every": 0})");
  put_text(cli, "bad-types", R"({"layers": "two", "dropout": [1, 2], "branches": [4, 2, 1], "unknown": 1})");
  put_text(cli, "not-an-object", "[1, 2, 3]");
  fs::remove_all(scratch);
  return 0;
}
