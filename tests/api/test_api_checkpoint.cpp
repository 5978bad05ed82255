// Checkpoints: bit-exact round trips, exact resume, and strict rejection of damaged or foreign files.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>

#include "api_helpers.hpp"

using namespace api_test;
using nlohmann::json;

namespace {

std::vector<uint8_t> read_bytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string &path, const std::vector<uint8_t> &bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char *>(bytes.data()), (std::streamsize)bytes.size());
}

// A safetensors file taken apart: tensors (name, dtype, shape, raw bytes) and metadata, to damage and reassemble.
struct Entry {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
struct Parts {
  std::vector<Entry> tensors;
  json metadata;
};

Parts take_apart(const std::string &path) {
  const auto bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  json header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + (long)n);
  Parts parts;
  parts.metadata = header["__metadata__"];
  for (auto &[name, t] : header.items()) {
    if (name == "__metadata__") continue;
    const size_t begin = t["data_offsets"][0], end = t["data_offsets"][1];
    parts.tensors.push_back({name, t["dtype"], t["shape"].get<std::vector<int64_t>>(),
                             std::vector<uint8_t>(bytes.begin() + 8 + (long)n + (long)begin,
                                                  bytes.begin() + 8 + (long)n + (long)end)});
  }
  return parts;
}

void reassemble(const Parts &parts, const std::string &path) {
  json header;
  header["__metadata__"] = parts.metadata;
  std::vector<uint8_t> data;
  for (const Entry &e : parts.tensors) {
    header[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {data.size(), data.size() + e.bytes.size()}}};
    data.insert(data.end(), e.bytes.begin(), e.bytes.end());
  }
  std::string text = header.dump();
  const uint64_t n = text.size();
  std::vector<uint8_t> out(8);
  std::memcpy(out.data(), &n, 8);
  out.insert(out.end(), text.begin(), text.end());
  out.insert(out.end(), data.begin(), data.end());
  write_bytes(path, out);
}

Entry *find(Parts &parts, const std::string &name) {
  for (Entry &e : parts.tensors)
    if (e.name == name) return &e;
  FAIL("no tensor " << name);
  return nullptr;
}

}  // namespace

TEST_CASE("save -> load round-trips bit-exactly, with nanoGPT tensor names (SPEC §6.6)", "[api][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  moas_model_config cfg = small_config();
  ModelPtr model = make_model(cfg);
  REQUIRE(moas_model_save(model.get(), path.c_str(), "{\"vocab\":\"abc\"}") == MOAS_OK);

  Parts parts = take_apart(path);
  for (const char *name : {"transformer.wte.weight", "lm_head.weight", "transformer.wpe.weight",
                           "transformer.h.1.attn.q_proj.weight", "transformer.h.1.attn.k_proj.weight",
                           "transformer.h.0.mlp.c_fc.weight", "transformer.ln_f.weight"})
    REQUIRE(find(parts, name) != nullptr);
  REQUIRE(find(parts, "transformer.h.0.attn.k_proj.weight")->shape == std::vector<int64_t>{16, 32});
  REQUIRE(json::parse(parts.metadata["config"].get<std::string>())["n_kv_head"] == 2);

  cfg.seed = 99;  // different initial weights, overwritten by the load
  ModelPtr other = make_model(cfg);
  REQUIRE(all_params(other.get()) != all_params(model.get()));
  REQUIRE(moas_model_load(other.get(), path.c_str()) == MOAS_OK);
  REQUIRE(all_params(other.get()) == all_params(model.get()));

  moas_model *created = nullptr;
  REQUIRE(moas_model_create_from_file(path.c_str(), nullptr, &created) == MOAS_OK);
  ModelPtr from_file(created);
  REQUIRE(all_params(from_file.get()) == all_params(model.get()));
  const auto tokens = sequence(2 * 16, 13, 8);
  REQUIRE(moas_forward(model.get(), tokens.data(), nullptr, 2, 16, 0, nullptr, nullptr) == MOAS_OK);
  REQUIRE(moas_forward(from_file.get(), tokens.data(), nullptr, 2, 16, 0, nullptr, nullptr) == MOAS_OK);
  REQUIRE(logits_of(model.get(), 2 * 16 * 13) == logits_of(from_file.get(), 2 * 16 * 13));

  size_t needed = 0;
  REQUIRE(moas_checkpoint_user_metadata(path.c_str(), nullptr, 0, &needed) == MOAS_OK);
  std::vector<char> buf(needed);
  REQUIRE(moas_checkpoint_user_metadata(path.c_str(), buf.data(), buf.size() - 1, &needed) == MOAS_ERR_SIZE_MISMATCH);
  REQUIRE(moas_checkpoint_user_metadata(path.c_str(), buf.data(), buf.size(), &needed) == MOAS_OK);
  REQUIRE(std::string(buf.data()) == "{\"vocab\":\"abc\"}");
}

TEST_CASE("CoPE and window checkpoints round-trip; configs without the 0.3.0 keys load with their defaults",
          "[api][checkpoint]") {
  TempDir dir;
  moas_model_config cfg = small_config();
  cfg.position = MOAS_POSITION_COPE;
  cfg.cope_max_pos = 8;
  cfg.window_size = 5;
  ModelPtr model = make_model(cfg);
  for (const char *name : {"transformer.h.0.attn.cope.weight", "transformer.h.1.attn.cope.weight"}) {
    std::vector<float> e = read_param(model.get(), name);
    REQUIRE(e.size() == 4 * 8 * 8);  // [n_head, P, head_dim], initialised to zero
    REQUIRE(std::all_of(e.begin(), e.end(), [](float x) { return x == 0.0f; }));
    for (size_t i = 0; i < e.size(); i++) e[i] = 0.01f * (float)(i % 17) - 0.05f;
    REQUIRE(moas_parameter_write(model.get(), name, e.data(), e.size()) == MOAS_OK);
  }
  const std::string path = dir.file("cope.safetensors");
  REQUIRE(moas_model_save(model.get(), path.c_str(), nullptr) == MOAS_OK);
  Parts parts = take_apart(path);
  REQUIRE(find(parts, "transformer.h.1.attn.cope.weight")->shape == std::vector<int64_t>{4, 8, 8});
  for (const Entry &e : parts.tensors) REQUIRE(e.name != "transformer.wpe.weight");  // CoPE has no wpe
  const json config = json::parse(parts.metadata["config"].get<std::string>());
  REQUIRE(config["position"] == "cope");
  REQUIRE(config["cope_max_pos"] == 8);
  REQUIRE(config["window_size"] == 5);

  moas_model *created = nullptr;
  REQUIRE(moas_model_create_from_file(path.c_str(), nullptr, &created) == MOAS_OK);
  ModelPtr loaded(created);
  REQUIRE(all_params(loaded.get()) == all_params(model.get()));
  const auto tokens = sequence(2 * 16, 13, 9);
  REQUIRE(moas_forward(model.get(), tokens.data(), nullptr, 2, 16, 0, nullptr, nullptr) == MOAS_OK);
  REQUIRE(moas_forward(loaded.get(), tokens.data(), nullptr, 2, 16, 0, nullptr, nullptr) == MOAS_OK);
  REQUIRE(logits_of(model.get(), 2 * 16 * 13) == logits_of(loaded.get(), 2 * 16 * 13));
  cfg.window_size = 0;  // another architecture: its attention sees other keys
  ModelPtr full_causal = make_model(cfg);
  REQUIRE(moas_model_load(full_causal.get(), path.c_str()) == MOAS_ERR_CHECKPOINT_CONFIG);
  REQUIRE(std::string(moas_last_error()).find("window") != std::string::npos);

  // Written before 0.3.0: no window_size (nor cope_max_pos) in the config; a CoPE config without cope_max_pos gets
  // P = 64.
  for (const bool cope : {false, true}) {
    moas_model_config old_cfg = small_config();
    if (cope) old_cfg.position = MOAS_POSITION_COPE;
    ModelPtr old_model = make_model(old_cfg);
    const std::string saved = dir.file("saved.safetensors"), old = dir.file("old.safetensors");
    REQUIRE(moas_model_save(old_model.get(), saved.c_str(), nullptr) == MOAS_OK);
    Parts old_parts = take_apart(saved);
    json old_config = json::parse(old_parts.metadata["config"].get<std::string>());
    REQUIRE(old_config.contains("window_size"));
    REQUIRE(old_config.contains("cope_max_pos") == cope);
    old_config.erase("window_size");
    old_config.erase("cope_max_pos");
    old_parts.metadata["config"] = old_config.dump();
    reassemble(old_parts, old);
    moas_model *from_old = nullptr;
    INFO("CoPE " << cope);
    REQUIRE(moas_model_create_from_file(old.c_str(), nullptr, &from_old) == MOAS_OK);
    ModelPtr restored(from_old);
    moas_model_config got;
    got.struct_size = sizeof got;
    REQUIRE(moas_model_get_config(restored.get(), &got) == MOAS_OK);
    REQUIRE(got.window_size == 0);
    REQUIRE(got.cope_max_pos == 64);
    REQUIRE(all_params(restored.get()) == all_params(old_model.get()));
    REQUIRE(moas_model_load(old_model.get(), old.c_str()) == MOAS_OK);
  }
}

TEST_CASE("a state_dict carrying only lm_head.weight for the tied embedding loads", "[api][checkpoint]") {
  TempDir dir;
  ModelPtr model = make_model(small_config());
  REQUIRE(moas_model_save(model.get(), dir.file("a.safetensors").c_str(), nullptr) == MOAS_OK);
  Parts parts = take_apart(dir.file("a.safetensors"));
  parts.tensors.erase(std::remove_if(parts.tensors.begin(), parts.tensors.end(),
                                     [](const Entry &e) { return e.name == "transformer.wte.weight"; }),
                      parts.tensors.end());
  reassemble(parts, dir.file("b.safetensors"));
  moas_model_config cfg = small_config();
  cfg.seed = 5;
  ModelPtr other = make_model(cfg);
  REQUIRE(moas_model_load(other.get(), dir.file("b.safetensors").c_str()) == MOAS_OK);
  REQUIRE(all_params(other.get()) == all_params(model.get()));
}

TEST_CASE("lm_head.weight names the tied embedding", "[api][checkpoint]") {
  ModelPtr model = make_model(small_config());
  const std::vector<float> wte = read_param(model.get(), "transformer.wte.weight");
  std::vector<float> head(wte.size());
  REQUIRE(moas_parameter_read(model.get(), "lm_head.weight", head.data(), head.size()) == MOAS_OK);
  CHECK(head == wte);
  std::vector<float> written(wte.size(), 0.25f);
  REQUIRE(moas_parameter_write(model.get(), "lm_head.weight", written.data(), written.size()) == MOAS_OK);
  CHECK(read_param(model.get(), "transformer.wte.weight") == written);
  CHECK(moas_parameter_write(model.get(), "lm_head.weight", written.data(), 3) == MOAS_ERR_SIZE_MISMATCH);
}

TEST_CASE("damaged or foreign checkpoints get their own status and leave the model untouched", "[api][checkpoint]") {
  TempDir dir;
  const std::string good = dir.file("good.safetensors"), bad = dir.file("bad.safetensors");
  ModelPtr source = make_model(small_config());
  REQUIRE(moas_model_save(source.get(), good.c_str(), nullptr) == MOAS_OK);
  moas_model_config cfg = small_config();
  cfg.seed = 3;
  ModelPtr target = make_model(cfg);
  const auto before = all_params(target.get());

  auto expect = [&](moas_status status, const char *fragment) {
    const moas_status got = moas_model_load(target.get(), bad.c_str());
    INFO(moas_status_string(got) << ": " << moas_last_error());
    REQUIRE(got == status);
    REQUIRE(std::string(moas_last_error()).find(fragment) != std::string::npos);
    REQUIRE(all_params(target.get()) == before);
  };
  auto damaged = [&](const std::function<void(Parts &)> &edit) {
    Parts parts = take_apart(good);
    edit(parts);
    reassemble(parts, bad);
  };

  const auto bytes = read_bytes(good);
  for (size_t cut : {size_t(0), size_t(5), size_t(20), bytes.size() / 2, bytes.size() - 1}) {
    DYNAMIC_SECTION("truncated to " << cut << " bytes") {
      write_bytes(bad, std::vector<uint8_t>(bytes.begin(), bytes.begin() + (long)cut));
      expect(MOAS_ERR_CHECKPOINT_TRUNCATED, "bad.safetensors");
    }
  }
  SECTION("missing file") {
    const moas_status got = moas_model_load(target.get(), dir.file("absent.safetensors").c_str());
    REQUIRE(got == MOAS_ERR_IO);
  }
  SECTION("a text file") {
    const std::string text = "Hello, this is not a checkpoint at all, just some words.";
    write_bytes(bad, std::vector<uint8_t>(text.begin(), text.end()));
    const moas_status got = moas_model_load(target.get(), bad.c_str());
    REQUIRE((got == MOAS_ERR_CHECKPOINT_HEADER || got == MOAS_ERR_CHECKPOINT_TRUNCATED));
    REQUIRE(all_params(target.get()) == before);
  }
  SECTION("trailing bytes") {
    auto extended = bytes;
    extended.push_back(0);
    write_bytes(bad, extended);
    expect(MOAS_ERR_CHECKPOINT_LAYOUT, "trailing");
  }
  SECTION("another architecture") {
    moas_model_config other = small_config();
    other.n_layer = 3;
    ModelPtr deeper = make_model(other);
    REQUIRE(moas_model_save(deeper.get(), bad.c_str(), nullptr) == MOAS_OK);
    expect(MOAS_ERR_CHECKPOINT_CONFIG, "n_layer");
  }
  SECTION("no config metadata (a plain PyTorch safetensors file)") {
    damaged([](Parts &p) { p.metadata = json::object(); });
    expect(MOAS_ERR_CHECKPOINT_CONFIG, "config");
  }
  SECTION("missing tensor") {
    damaged([](Parts &p) {
      p.tensors.erase(std::remove_if(p.tensors.begin(), p.tensors.end(),
                                     [](const Entry &e) { return e.name == "transformer.h.1.ln_2.weight"; }),
                      p.tensors.end());
    });
    expect(MOAS_ERR_CHECKPOINT_MISSING_TENSOR, "transformer.h.1.ln_2.weight");
  }
  SECTION("unexpected tensor") {
    damaged([](Parts &p) { p.tensors.push_back({"transformer.h.9.attn.c_proj.weight", "F32", {1}, {0, 0, 0, 0}}); });
    expect(MOAS_ERR_CHECKPOINT_UNEXPECTED_TENSOR, "transformer.h.9.attn.c_proj.weight");
  }
  SECTION("wrong shape") {
    damaged([](Parts &p) { find(p, "transformer.ln_f.weight")->shape = {4, 8}; });
    expect(MOAS_ERR_CHECKPOINT_SHAPE, "transformer.ln_f.weight");
  }
  SECTION("integer dtype") {
    damaged([](Parts &p) { find(p, "transformer.ln_f.weight")->dtype = "I32"; });
    expect(MOAS_ERR_CHECKPOINT_DTYPE, "transformer.ln_f.weight");
  }
  SECTION("NaN in a weight") {
    damaged([](Parts &p) {
      const float nan = NAN;
      std::memcpy(find(p, "transformer.h.0.attn.c_proj.weight")->bytes.data() + 8, &nan, 4);
    });
    expect(MOAS_ERR_NON_FINITE, "transformer.h.0.attn.c_proj.weight");
  }
  SECTION("BF16 weights are converted") {
    damaged([](Parts &p) {
      Entry *e = find(p, "transformer.ln_f.weight");
      std::vector<uint8_t> bf16;
      for (size_t i = 0; i < e->bytes.size(); i += 4) {
        bf16.push_back(0);
        bf16.push_back(0x40);  // 2.0 in bfloat16 is 0x4000
      }
      e->bytes = bf16;
      e->dtype = "BF16";
    });
    REQUIRE(moas_model_load(target.get(), bad.c_str()) == MOAS_OK);
    REQUIRE(read_param(target.get(), "transformer.ln_f.weight") == std::vector<float>(32, 2.0f));
  }
  // The model still trains after every failure above.
  const auto tokens = sequence(8, 13, 1), targets = sequence(8, 13, 2);
  REQUIRE(moas_forward(target.get(), tokens.data(), targets.data(), 1, 8, 1, nullptr, nullptr) == MOAS_OK);
  REQUIRE(moas_backward(target.get()) == MOAS_OK);
}

TEST_CASE("saving to an unwritable place fails cleanly", "[api][checkpoint]") {
  ModelPtr model = make_model(small_config());
  REQUIRE(moas_model_save(model.get(), "/nonexistent-dir/x.safetensors", nullptr) == MOAS_ERR_IO);
  REQUIRE(moas_model_save(model.get(), nullptr, nullptr) == MOAS_ERR_NULL_ARGUMENT);
  REQUIRE(moas_optimizer_save(model.get(), "/tmp/never.optim.safetensors") == MOAS_ERR_NO_FORWARD);
}

namespace {

void train(moas_model *m, int first_step, int steps) {
  moas_adamw_config adamw;
  adamw.struct_size = sizeof adamw;
  REQUIRE(moas_adamw_config_default(&adamw) == MOAS_OK);
  for (int s = first_step; s < first_step + steps; s++) {
    const auto tokens = sequence(2 * 12, 13, 1000 + s), targets = sequence(2 * 12, 13, 2000 + s);
    REQUIRE(moas_zero_grad(m) == MOAS_OK);
    REQUIRE(moas_forward(m, tokens.data(), targets.data(), 2, 12, 1, nullptr, nullptr) == MOAS_OK);
    REQUIRE(moas_backward(m) == MOAS_OK);
    REQUIRE(moas_optimizer_step(m, &adamw, nullptr) == MOAS_OK);
  }
}

}  // namespace

TEST_CASE("resuming from model + optimizer checkpoints continues bit-exactly", "[api][checkpoint]") {
  TempDir dir;
  moas_model_config cfg = small_config();
  cfg.dropout = 0.1f;  // masks are keyed by the step: the counter must be restored too
  ModelPtr straight = make_model(cfg);
  train(straight.get(), 0, 3);
  REQUIRE(moas_model_save(straight.get(), dir.file("m.safetensors").c_str(), nullptr) == MOAS_OK);
  REQUIRE(moas_optimizer_save(straight.get(), dir.file("m.optim.safetensors").c_str()) == MOAS_OK);
  train(straight.get(), 3, 2);

  moas_model *created = nullptr;
  REQUIRE(moas_model_create_from_file(dir.file("m.safetensors").c_str(), nullptr, &created) == MOAS_OK);
  ModelPtr resumed(created);
  REQUIRE(moas_optimizer_load(resumed.get(), dir.file("m.optim.safetensors").c_str()) == MOAS_OK);
  uint64_t steps = 0;
  REQUIRE(moas_optimizer_steps(resumed.get(), &steps) == MOAS_OK);
  REQUIRE(steps == 3);
  train(resumed.get(), 3, 2);
  REQUIRE(all_params(resumed.get()) == all_params(straight.get()));

  // Optimizer state of another model is refused.
  moas_model_config other = small_config();
  other.n_embd = 16;
  ModelPtr small = make_model(other);
  REQUIRE(moas_optimizer_load(small.get(), dir.file("m.optim.safetensors").c_str()) == MOAS_ERR_CHECKPOINT_CONFIG);
}
