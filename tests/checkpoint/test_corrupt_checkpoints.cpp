// Damaged and hostile checkpoint files through the public C ABI. Each file is a real checkpoint of a tiny model (or
// its optimiser state) damaged one way, and each is its own test with the status it must get. Every failed load
// must leave the model (and its optimiser state) bit for bit as it was, and its message must name the file, the
// field at fault where there is one, and stay short. The hostile-size files run in a child process whose peak memory
// and time are bounded: a lying header must not make the loader allocate or read what it claims.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "api/api_helpers.hpp"
#include "checkpoint/hostile_files.hpp"

extern char **environ;

using namespace api_test;
using hostile::Bytes;
using hostile::Safetensors;
using nlohmann::ordered_json;

namespace {

// MOAS_ERR_CHECKPOINT_VALUE, spelled by its number so this file builds against a moas.h from before it.
const moas_status kCheckpointValue = static_cast<moas_status>(27);

// A message says what to fix in a line or two: never a dump of the file's contents.
constexpr size_t kMaxMessage = 1000;

#if defined(MOAS_TEST_SANITIZED) || defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;  // the sanitizers' shadow memory and slowdown make RSS and time meaningless
#else
constexpr bool kSanitized = false;
#endif

const char *const kWte = "transformer.wte.weight";
const char *const kHead = "lm_head.weight";
const char *const kLnF = "transformer.ln_f.weight";
const char *const kFc = "transformer.h.0.mlp.c_fc.weight";
const char *const kMlpOut = "transformer.h.0.mlp.c_proj.weight";
const char *const kRouter = "transformer.h.0.attn.router.2.weight";

// The untouched files damaged copies are made from.
struct Sources {
  Bytes model;            // moas_model_save of the tiny model (seed 1) after two steps
  Bytes optimizer;        // its moas_optimizer_save
  Bytes moh_model;        // the tiny MixtureOfHeads model
  Bytes deeper_model;     // the tiny model with two layers
  Bytes other_optimizer;  // the optimiser state of a model with n_embd 16
};

void train(moas_model *m, int steps) {
  moas_adamw_config adamw;
  adamw.struct_size = sizeof adamw;
  REQUIRE(moas_adamw_config_default(&adamw) == MOAS_OK);
  for (int s = 0; s < steps; s++) {
    const auto tokens = sequence(2 * 8, 11, 10 + (uint32_t)s), targets = sequence(2 * 8, 11, 20 + (uint32_t)s);
    REQUIRE(moas_zero_grad(m) == MOAS_OK);
    REQUIRE(moas_forward(m, tokens.data(), targets.data(), 2, 8, 1, nullptr, nullptr) == MOAS_OK);
    REQUIRE(moas_backward(m) == MOAS_OK);
    REQUIRE(moas_optimizer_step(m, &adamw, nullptr) == MOAS_OK);
  }
}

Bytes saved_model(const TempDir &dir, const moas_model_config &cfg, bool optimizer) {
  ModelPtr m = make_model(cfg);
  train(m.get(), 2);
  const std::string path = dir.file("source.safetensors");
  if (optimizer) {
    REQUIRE(moas_optimizer_save(m.get(), path.c_str()) == MOAS_OK);
  } else {
    REQUIRE(moas_model_save(m.get(), path.c_str(), nullptr) == MOAS_OK);
  }
  return hostile::read_bytes(path);
}

Sources make_sources(const TempDir &dir) {
  moas_model_config deeper = hostile::tiny_config(), wider = hostile::tiny_config();
  deeper.n_layer = 2;
  wider.n_embd = 16;
  return {saved_model(dir, hostile::tiny_config(), false), saved_model(dir, hostile::tiny_config(), true),
          saved_model(dir, hostile::tiny_moh_config(), false), saved_model(dir, deeper, false),
          saved_model(dir, wider, true)};
}

// An eval forward with targets: the loss is checked, so weights that overflow give MOAS_ERR_NON_FINITE.
moas_status forward_status(moas_model *m) {
  const auto tokens = sequence(2 * 8, 11, 3), targets = sequence(2 * 8, 11, 4);
  float loss = 0;
  return moas_forward(m, tokens.data(), targets.data(), 2, 8, 0, &loss, nullptr);
}

// Every parameter's bits, in enumeration order: "unchanged" means bit-identical, not merely equal.
std::vector<uint32_t> parameter_bits(const moas_model *m) {
  const std::vector<float> values = all_params(m);
  std::vector<uint32_t> bits(values.size());
  if (!values.empty()) std::memcpy(bits.data(), values.data(), values.size() * sizeof(float));
  return bits;
}

std::string shortened(const std::string &message) {
  if (message.size() <= 400) return message;
  return message.substr(0, 400) + "... (" + std::to_string(message.size()) + " chars)";
}

void check_message(const std::string &message, const std::string &path, const std::string &field) {
  INFO("message: " << shortened(message));
  CHECK(!message.empty());
  CHECK(message.size() <= kMaxMessage);
  CHECK(message.find(path) != std::string::npos);
  if (!field.empty()) CHECK(message.find(field) != std::string::npos);
}

enum class Target { Model, MohModel, Optimizer };

using MakeFile = std::function<Bytes(const Sources &)>;

struct Case {
  std::string name;
  Target target;
  MakeFile file;
  moas_status load;    // moas_model_load, or moas_optimizer_load for Target::Optimizer
  moas_status create;  // moas_model_create_from_file (model targets)
  std::string field;   // what the message must name besides the path ("" for the path alone)
  // Runs after a successful load instead of the usual forward (given the model and the untouched checkpoint).
  std::function<void(moas_model *, const std::string &)> after_load;
};

// Files made from a source by an edit of its parts.
MakeFile edited(std::function<void(Safetensors &)> edit, Bytes Sources::*source = &Sources::model) {
  return [edit, source](const Sources &s) {
    Safetensors f = Safetensors::parse(s.*source);
    edit(f);
    return f.build();
  };
}

// The tiny model's checkpoint with its header text rewritten (the data section kept).
MakeFile header_text(std::function<std::string(const std::string &)> rewrite,
                     Bytes Sources::*source = &Sources::model) {
  return [rewrite, source](const Sources &s) {
    const Safetensors f = Safetensors::parse(s.*source);
    return hostile::file_of(rewrite(f.header_text()), f.data);
  };
}

// The tiny model's checkpoint with its config JSON edited.
MakeFile config_edit(std::function<void(ordered_json &)> edit, Bytes Sources::*source = &Sources::model) {
  return edited(
      [edit](Safetensors &f) {
        ordered_json config = f.config();
        edit(config);
        f.set_config(config);
      },
      source);
}

MakeFile config_set(const std::string &key, const ordered_json &value) {
  return config_edit([key, value](ordered_json &c) { c[key] = value; });
}

// The first occurrence of `what` in `text` replaced.
std::string replaced(std::string text, const std::string &what, const std::string &with) {
  const size_t at = text.find(what);
  if (at == std::string::npos) throw std::runtime_error("no '" + what + "' in the header");
  return text.replace(at, what.size(), with);
}

// A header entry's JSON text as it appears in the file.
std::string entry_text(const std::string &header, const std::string &name) {
  const std::string key = "\"" + name + "\":";
  const size_t begin = header.find(key);
  if (begin == std::string::npos) throw std::runtime_error("no entry " + name);
  return header.substr(begin, header.find('}', begin) + 1 - begin);
}

MakeFile truncated_to(std::function<size_t(const Bytes &)> size) {
  return [size](const Sources &s) { return hostile::prefix(s.model, size(s.model)); };
}

// The MLP's weights set to +-1e38: finite, so the load succeeds, but their products overflow in any forward. (Not
// every weight: LayerNorm turns inputs of that size into zeros, as their variance overflows to infinity.)
void huge_weights(Safetensors &f) {
  for (const std::string name : {kFc, kMlpOut}) {
    const uint64_t numel = f.tensor_bytes(name).size() / 4;
    for (size_t i = 0; i < numel; i++) f.set_float(name, i, i % 2 ? 1e38f : -1e38f);
  }
}

void overflowing_forward_then_reload(moas_model *m, const std::string &good) {
  const moas_status forward = forward_status(m);
  INFO("forward with 1e38 weights: " << moas_status_string(forward) << ": " << moas_last_error());
  CHECK(forward == MOAS_ERR_NON_FINITE);
  CHECK(std::string(moas_last_error()).size() > 0);
  REQUIRE(moas_model_load(m, good.c_str()) == MOAS_OK);
  CHECK(forward_status(m) == MOAS_OK);
}

std::vector<Case> model_file_cases() {
  std::vector<Case> cases;
  auto add = [&](std::string name, MakeFile file, moas_status load, moas_status create, std::string field = "",
                 Target target = Target::Model) {
    cases.push_back({std::move(name), target, std::move(file), load, create, std::move(field), nullptr});
  };
  auto both = [&](std::string name, MakeFile file, moas_status status, std::string field = "") {
    add(std::move(name), std::move(file), status, status, std::move(field));
  };
  const moas_status ok = MOAS_OK, truncated = MOAS_ERR_CHECKPOINT_TRUNCATED, header = MOAS_ERR_CHECKPOINT_HEADER,
                    layout = MOAS_ERR_CHECKPOINT_LAYOUT, dtype = MOAS_ERR_CHECKPOINT_DTYPE,
                    config = MOAS_ERR_CHECKPOINT_CONFIG, shape = MOAS_ERR_CHECKPOINT_SHAPE;

  // Cut short: inside the length, inside the header, inside the data.
  for (size_t n : {0, 3, 7, 8, 9})
    both("truncated: first " + std::to_string(n) + " bytes", truncated_to([n](const Bytes &) { return n; }), truncated);
  both("truncated: half the header", truncated_to([](const Bytes &b) { return 8 + hostile::header_length(b) / 2; }),
       truncated);
  both("truncated: header less its last byte",
       truncated_to([](const Bytes &b) { return 8 + hostile::header_length(b) - 1; }), truncated);
  both("truncated: header without data", truncated_to([](const Bytes &b) { return 8 + hostile::header_length(b); }),
       truncated);
  both("truncated: one data byte", truncated_to([](const Bytes &b) { return 9 + hostile::header_length(b); }),
       truncated);
  both("truncated: half the data", truncated_to([](const Bytes &b) {
         const size_t start = 8 + hostile::header_length(b);
         return start + (b.size() - start) / 2;
       }),
       truncated);
  both("truncated: last float missing", truncated_to([](const Bytes &b) { return b.size() - 4; }), truncated);
  both("truncated: last byte missing", truncated_to([](const Bytes &b) { return b.size() - 1; }), truncated);
  for (uint32_t seed = 1; seed <= 6; seed++)
    both("truncated: seeded offset " + std::to_string(seed), truncated_to([seed](const Bytes &b) {
           return (size_t)(((uint64_t)seed * 2654435761u + 977u) % b.size());
         }),
         truncated);

  // The header length field.
  auto with_length = [](std::function<uint64_t(const Safetensors &)> length) -> MakeFile {
    return [length](const Sources &s) {
      const Safetensors f = Safetensors::parse(s.model);
      Bytes file = f.build();  // unpadded: the header's last byte is its closing brace
      hostile::set_header_length(file, length(f));
      return file;
    };
  };
  both("length: zero", with_length([](const Safetensors &) { return 0; }), header);
  both("length: 100000001", with_length([](const Safetensors &) { return 100000001; }), header);
  both("length: 2^64-1", with_length([](const Safetensors &) { return UINT64_MAX; }), header);
  both("length: 99999999 in a small file", with_length([](const Safetensors &) { return 99999999; }), truncated);
  both("length: one past the end",
       with_length([](const Safetensors &f) { return f.header_text().size() + f.data.size() + 1; }), truncated);
  both("length: one byte short", with_length([](const Safetensors &f) { return f.header_text().size() - 1; }),
       header);
  both("length: four data bytes long", with_length([](const Safetensors &f) { return f.header_text().size() + 4; }),
       header);

  // The header text.
  auto whole_header = [](std::string text) { return header_text([text](const std::string &) { return text; }); };
  both("header: plain text", whole_header("this is not JSON at all"), header);
  both("header: JSON array", whole_header("[]"), header);
  both("header: JSON string", whole_header("\"x\""), header);
  both("header: byte 0xFF in metadata",
       header_text([](const std::string &h) { return replaced(h, "\"pt\"", "\"p\xff\""); }), header);
  both("header: overlong UTF-8 in a name",
       header_text([](const std::string &h) { return replaced(h, "ln_f", "ln\xc0\xaf"); }), header);
  both("header: UTF-8 encoded surrogate",
       header_text([](const std::string &h) { return replaced(h, "\"pt\"", "\"p\xed\xa0\x80\""); }), header);
  both("header: escaped lone surrogate",
       header_text([](const std::string &h) { return replaced(h, "\"pt\"", "\"p\\ud800\""); }), header);
  both("header: NUL before the object", header_text([](const std::string &h) { return std::string(1, '\0') + h; }),
       header);
  both("header: NUL then garbage after the object",
       header_text([](const std::string &h) { return h + std::string(1, '\0') + "garbage"; }), header);
  both("header: NUL inside a string",
       header_text([](const std::string &h) { return replaced(h, "\"pt\"", std::string("\"p\0t\"", 5)); }), header);
  both("header: control byte inside a string",
       header_text([](const std::string &h) { return replaced(h, "\"pt\"", "\"p\x01t\""); }), header);
  both("header: UTF-8 BOM before the object", header_text([](const std::string &h) { return "\xef\xbb\xbf" + h; }),
       header);
  both("header: 100000 unclosed brackets", whole_header("{\"a\":" + std::string(100000, '[')), header);
  both("header: 100000 nested arrays in an entry", header_text([](const std::string &h) {
         const std::string entry = entry_text(h, kLnF);
         const std::string nested = ",\"x\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
         return replaced(h, entry, entry.substr(0, entry.size() - 1) + nested);
       }),
       header);
  both("header: duplicate tensor name", header_text([](const std::string &h) {
         const std::string entry = entry_text(h, kLnF);
         return replaced(h, entry, entry + "," + entry);
       }),
       header, kLnF);
  both("header: duplicate metadata key", header_text([](const std::string &h) {
         return replaced(h, "\"format\":\"pt\"", "\"format\":\"pt\",\"format\":\"pt\"");
       }),
       header, "format");
  both("header: duplicate dtype in an entry", header_text([](const std::string &h) {
         const std::string entry = entry_text(h, kLnF);
         return replaced(h, entry, replaced(entry, "\"dtype\":\"F32\"", "\"dtype\":\"F32\",\"dtype\":\"F32\""));
       }),
       header, "dtype");
  both("header: metadata value a number", edited([](Safetensors &f) { f.metadata()["format"] = 1; }), header,
       "format");
  both("header: metadata an array", edited([](Safetensors &f) { f.metadata() = ordered_json::array({"pt"}); }),
       header, "__metadata__");
  both("header: 200 KB unterminated string",
       header_text([](const std::string &h) { return h.substr(0, h.size() - 1) + ",\"" + std::string(200000, 'a'); }),
       header);
  both("header: dtype a number", edited([](Safetensors &f) { f.entry(kLnF)["dtype"] = 5; }), header, kLnF);
  both("header: three data offsets", edited([](Safetensors &f) { f.entry(kLnF)["data_offsets"].push_back(0); }),
       header, kLnF);
  both("header: negative dimension", edited([](Safetensors &f) { f.entry(kLnF)["shape"] = {-8}; }), header, kLnF);
  both("header: fractional dimension", edited([](Safetensors &f) { f.entry(kLnF)["shape"] = {8.0}; }), header,
       kLnF);
  both("header: garbage after the object", header_text([](const std::string &h) { return h + "x"; }), header);

  // Dtypes.
  auto set_dtype = [](std::string dtype_name) {
    return edited([dtype_name](Safetensors &f) { f.entry(kLnF)["dtype"] = dtype_name; });
  };
  auto replace_ln_f = [](std::string dtype_name, Bytes bytes) {
    return edited([dtype_name, bytes](Safetensors &f) {
      f.remove_tensor(kLnF);
      f.add_tensor(kLnF, dtype_name, {8}, bytes);
    });
  };
  both("dtype: unknown F31", set_dtype("F31"), dtype, kLnF);
  both("dtype: lower-case f32", set_dtype("f32"), dtype, kLnF);
  both("dtype: I32", set_dtype("I32"), dtype, kLnF);
  both("dtype: F64", replace_ln_f("F64", Bytes(64, 0)), dtype, kLnF);
  both("dtype: BF16 converts", replace_ln_f("BF16", Bytes{0, 0x40, 0, 0x40, 0, 0x40, 0, 0x40, 0, 0x40, 0, 0x40,
                                                         0, 0x40, 0, 0x40}),
       ok);
  both("dtype: F16 converts", replace_ln_f("F16", Bytes{0, 0x3c, 0, 0x3c, 0, 0x3c, 0, 0x3c, 0, 0x3c, 0, 0x3c,
                                                       0, 0x3c, 0, 0x3c}),
       ok);

  // Where the tensors lie.
  auto offsets = [](Safetensors &f, const std::string &name, int64_t shift) {
    ordered_json &o = f.entry(name)["data_offsets"];
    o = {o[0].get<int64_t>() + shift, o[1].get<int64_t>() + shift};
  };
  both("layout: unpadded header loads", edited([](Safetensors &) {}), ok);
  both("layout: shape disagrees with span", edited([](Safetensors &f) { f.entry(kLnF)["shape"] = {9}; }), layout,
       kLnF);
  both("layout: overlapping spans", edited([offsets](Safetensors &f) {
         offsets(f, kHead, -4);
         f.data.resize(f.data.size() - 4);
       }),
       layout);
  both("layout: out of order with a gap", edited([offsets](Safetensors &f) {
         const uint64_t begin = f.entry(kHead)["data_offsets"][0];
         f.data.insert(f.data.begin() + (std::ptrdiff_t)begin, 4, 0);
         offsets(f, kHead, 4);
         std::rotate(f.header.begin() + 1, f.header.end() - 1, f.header.end());  // lm_head first
       }),
       layout);
  both("layout: header order not data order", edited([](Safetensors &f) {
         std::reverse(f.header.begin() + 1, f.header.end());
       }),
       ok);
  both("layout: trailing bytes", edited([](Safetensors &f) { f.data.insert(f.data.end(), 4, 0); }), layout);
  both("layout: span ends past the file", edited([offsets](Safetensors &f) { offsets(f, kHead, 4); }), truncated);
  both("layout: offsets near 2^63", edited([](Safetensors &f) {
         const uint64_t far = uint64_t(1) << 63;
         f.entry(kLnF)["data_offsets"] = {far, far + 32};
       }),
       truncated);
  both("layout: offsets reversed", edited([](Safetensors &f) {
         ordered_json &o = f.entry(kLnF)["data_offsets"];
         o = {o[1], o[0]};
       }),
       header, kLnF);
  both("layout: element count overflows", edited([](Safetensors &f) {
         f.entry(kLnF)["shape"] = {uint64_t(1) << 32, uint64_t(1) << 32};
       }),
       layout, kLnF);
  both("layout: 20000 dims disagree with span", edited([](Safetensors &f) {
         ordered_json dims = ordered_json::array();
         for (int i = 0; i < 20000; i++) dims.push_back(1);
         dims.push_back(9);
         f.entry(kLnF)["shape"] = dims;
       }),
       layout, kLnF);
  both("shape: 20000 dims of ones", edited([](Safetensors &f) {
         ordered_json dims = ordered_json::array();
         for (int i = 0; i < 20000; i++) dims.push_back(1);
         dims.push_back(8);
         f.entry(kLnF)["shape"] = dims;
       }),
       shape, kLnF);

  // Which tensors there are.
  both("tensors: one missing", edited([](Safetensors &f) { f.remove_tensor(kLnF); }),
       MOAS_ERR_CHECKPOINT_MISSING_TENSOR, kLnF);
  both("tensors: none at all", edited([](Safetensors &f) {
         for (const std::string &name : f.tensor_names()) f.remove_tensor(name);
       }),
       MOAS_ERR_CHECKPOINT_MISSING_TENSOR);
  both("tensors: one extra", edited([](Safetensors &f) {
         f.add_tensor("transformer.h.1.ln_1.weight", "F32", {8}, Bytes(32, 0));
       }),
       MOAS_ERR_CHECKPOINT_UNEXPECTED_TENSOR, "transformer.h.1.ln_1.weight");
  both("tensors: extra with a 100 KB name", edited([](Safetensors &f) {
         f.add_tensor(std::string(100000, 'x'), "F32", {1}, Bytes(4, 0));
       }),
       MOAS_ERR_CHECKPOINT_UNEXPECTED_TENSOR);
  both("tensors: extra of zero size", edited([](Safetensors &f) { f.add_tensor("extra.empty", "F32", {0}, {}); }),
       MOAS_ERR_CHECKPOINT_UNEXPECTED_TENSOR, "extra.empty");
  both("tensors: lm_head without wte", edited([](Safetensors &f) { f.remove_tensor(kWte); }), ok);
  both("tensors: wte without lm_head", edited([](Safetensors &f) { f.remove_tensor(kHead); }), ok);
  both("shape: transposed", edited([](Safetensors &f) { f.entry(kFc)["shape"] = {8, 32}; }), shape, kFc);
  both("shape: wrong rank", edited([](Safetensors &f) { f.entry(kLnF)["shape"] = {2, 4}; }), shape, kLnF);
  both("shape: lm_head transposed", edited([](Safetensors &f) { f.entry(kHead)["shape"] = {8, 11}; }), shape,
       kHead);

  // Values.
  const moas_status non_finite = MOAS_ERR_NON_FINITE;
  both("values: NaN", edited([](Safetensors &f) { f.set_float(kFc, 5, std::nanf("")); }), non_finite, kFc);
  both("values: +Inf", edited([](Safetensors &f) { f.set_float(kRouter, 1, INFINITY); }), non_finite, kRouter);
  both("values: -Inf in lm_head", edited([](Safetensors &f) { f.set_float(kHead, 0, -INFINITY); }), non_finite,
       kHead);
  both("values: F16 NaN", replace_ln_f("F16", Bytes{0, 0x3c, 0, 0x7e, 0, 0x3c, 0, 0x3c, 0, 0x3c, 0, 0x3c, 0, 0x3c,
                                                   0, 0x3c}),
       non_finite, kLnF);
  cases.push_back({"values: 1e38 MLP loads then overflows", Target::Model, edited(huge_weights), ok, ok, "",
                   overflowing_forward_then_reload});

  // The config metadata: wrong JSON types, out of range, invalid, or another architecture.
  both("config: rope_base a string", config_set("rope_base", "500000"), config, "rope_base");
  both("config: dropout a string", config_set("dropout", "0.1"), config, "dropout");
  both("config: seed a string", config_set("seed", "1"), config, "seed");
  both("config: attn_dropout a number", config_set("attn_dropout", 1), config, "attn_dropout");
  both("config: bias a number", config_set("bias", 1), config, "bias");
  both("config: n_embd fractional", config_set("n_embd", 8.5), config, "n_embd");
  both("config: vocab_size in exponent form", config_set("vocab_size", 1.1e1), config, "vocab_size");
  both("config: moas_aux_weight a string", config_set("moas_aux_weight", "0.01"), config, "moas_aux_weight");
  both("config: n_embd -1", config_set("n_embd", -1), config, "n_embd");
  both("config: n_layer 2^40", config_set("n_layer", int64_t(1) << 40), config, "n_layer");
  both("config: vocab_size x n_embd overflows", config_edit([](ordered_json &c) {
         c["vocab_size"] = int64_t(1) << 32;
         c["n_embd"] = int64_t(1) << 32;
       }),
       config, "vocab_size");
  both("config: window_size 2^31", config_set("window_size", int64_t(1) << 31), config, "window_size");
  both("config: seed -1", config_set("seed", -1), config, "seed");
  both("config: seed 2^64", config_edit([](ordered_json &c) { c["seed"] = 18446744073709551616.0; }), config,
       "seed");
  both("config: branch kv heads 2^32+2", config_set("moas_branch_kv_heads", {0, 4294967298u, 1}), config,
       "moas_branch_kv_heads");
  both("config: rope_base 0.5", config_set("rope_base", 0.5), config, "rope_base");
  both("config: rope_base 1e39", config_set("rope_base", 1e39), config, "rope_base");
  both("config: dropout 1.5", config_set("dropout", 1.5), config, "dropout");
  both("config: n_head 3", config_set("n_head", 3), config, "n_head");
  both("config: unknown attention", config_set("attention", "foo"), config, "attention");
  both("config: not JSON", edited([](Safetensors &f) { f.metadata()["config"] = "{n_layer: 1"; }), config,
       "config");
  both("config: a JSON array", edited([](Safetensors &f) { f.metadata()["config"] = "[1]"; }), config, "config");
  both("config: absent", edited([](Safetensors &f) { f.metadata().erase("config"); }), config, "config");
  both("config: empty header", [](const Sources &) { return hostile::file_of("{}", {}); }, config, "config");
  both("config: layer checkpoint", edited([](Safetensors &f) { f.metadata()["layer"] = "{\"residual\":true}"; }),
       config, "layer");
  add("config: another architecture", [](const Sources &s) { return s.deeper_model; }, config, ok, "n_layer");
  add("config: another rope_base", config_set("rope_base", 500000.0), config, ok, "rope_base");
  add("config: another dropout", config_set("dropout", 0.3), config, ok, "dropout");
  add("config: another attn_dropout", config_set("attn_dropout", false), config, ok, "attn_dropout");
  add("config: another moas_aux_weight", config_set("moas_aux_weight", 0.5), config, ok, "moas_aux_weight");
  add("config: another load_balance_weight", config_edit([](ordered_json &c) {
        c["head_selection"]["load_balance_weight"] = 0.5;
      }, &Sources::moh_model),
      config, ok, "load_balance_weight", Target::MohModel);
  add("config: load_balance_weight a string", config_edit([](ordered_json &c) {
        c["head_selection"]["load_balance_weight"] = "0.01";
      }, &Sources::moh_model),
      config, config, "load_balance_weight", Target::MohModel);
  return cases;
}

std::vector<Case> optimizer_file_cases() {
  std::vector<Case> cases;
  auto add = [&](std::string name, MakeFile file, moas_status status, std::string field = "") {
    cases.push_back({std::move(name), Target::Optimizer, std::move(file), status, MOAS_OK, std::move(field), nullptr});
  };
  const std::string sq = std::string(kLnF) + ".exp_avg_sq", avg = std::string(kFc) + ".exp_avg";
  auto edit = [](std::function<void(Safetensors &)> e) { return edited(std::move(e), &Sources::optimizer); };
  add("optimizer: intact", [](const Sources &s) { return s.optimizer; }, MOAS_OK);
  add("optimizer: first 4 bytes", [](const Sources &s) { return hostile::prefix(s.optimizer, 4); },
      MOAS_ERR_CHECKPOINT_TRUNCATED);
  add("optimizer: half the data", [](const Sources &s) {
        const size_t start = 8 + hostile::header_length(s.optimizer);
        return hostile::prefix(s.optimizer, start + (s.optimizer.size() - start) / 2);
      },
      MOAS_ERR_CHECKPOINT_TRUNCATED);
  add("optimizer: header not JSON",
      [](const Sources &s) { return hostile::file_of("{\"step\": 2,", Safetensors::parse(s.optimizer).data); },
      MOAS_ERR_CHECKPOINT_HEADER);
  add("optimizer: BOM before the header",
      header_text([](const std::string &h) { return "\xef\xbb\xbf" + h; }, &Sources::optimizer),
      MOAS_ERR_CHECKPOINT_HEADER);
  add("optimizer: trailing bytes", edit([](Safetensors &f) { f.data.insert(f.data.end(), 4, 0); }),
      MOAS_ERR_CHECKPOINT_LAYOUT);
  add("optimizer: negative exp_avg_sq", edit([sq](Safetensors &f) { f.set_float(sq, 3, -1e-6f); }), kCheckpointValue,
      sq);
  add("optimizer: NaN exp_avg_sq", edit([sq](Safetensors &f) { f.set_float(sq, 0, std::nanf("")); }),
      MOAS_ERR_NON_FINITE, sq);
  add("optimizer: Inf exp_avg", edit([avg](Safetensors &f) { f.set_float(avg, 7, INFINITY); }), MOAS_ERR_NON_FINITE,
      avg);
  add("optimizer: missing exp_avg_sq", edit([sq](Safetensors &f) { f.remove_tensor(sq); }),
      MOAS_ERR_CHECKPOINT_MISSING_TENSOR, sq);
  add("optimizer: extra tensor", edit([](Safetensors &f) { f.add_tensor("x.exp_avg", "F32", {1}, Bytes(4, 0)); }),
      MOAS_ERR_CHECKPOINT_UNEXPECTED_TENSOR, "x.exp_avg");
  add("optimizer: exp_avg wrong shape", edit([avg](Safetensors &f) { f.entry(avg)["shape"] = {8, 32}; }),
      MOAS_ERR_CHECKPOINT_SHAPE, avg);
  add("optimizer: step not a count", edit([](Safetensors &f) { f.metadata()["step"] = "abc"; }),
      MOAS_ERR_CHECKPOINT_CONFIG, "step");
  add("optimizer: step absent", edit([](Safetensors &f) { f.metadata().erase("step"); }), MOAS_ERR_CHECKPOINT_CONFIG,
      "step");
  add("optimizer: training_forwards -1", edit([](Safetensors &f) { f.metadata()["training_forwards"] = "-1"; }),
      MOAS_ERR_CHECKPOINT_CONFIG, "training_forwards");
  add("optimizer: of another model", [](const Sources &s) { return s.other_optimizer; }, MOAS_ERR_CHECKPOINT_CONFIG,
      "n_embd");
  add("optimizer: a model checkpoint", [](const Sources &s) { return s.model; }, MOAS_ERR_CHECKPOINT_CONFIG, "step");
  return cases;
}

const std::vector<Case> &all_cases() {
  static const std::vector<Case> cases = [] {
    std::vector<Case> all = model_file_cases();
    for (Case &c : optimizer_file_cases()) all.push_back(std::move(c));
    return all;
  }();
  return cases;
}

void run_model_case(const Case &c, const TempDir &dir, const Sources &sources, const std::string &path) {
  const std::string good = dir.file("good.safetensors");
  hostile::write_bytes(good, c.target == Target::MohModel ? sources.moh_model : sources.model);
  moas_model_config cfg = c.target == Target::MohModel ? hostile::tiny_moh_config() : hostile::tiny_config();
  cfg.seed = 2;  // other weights than the file's, so that a load that went through would show
  ModelPtr target = make_model(cfg);
  const std::vector<uint32_t> before = parameter_bits(target.get());

  const moas_status loaded = moas_model_load(target.get(), path.c_str());
  const std::string load_message = moas_last_error();
  {
    INFO("moas_model_load: " << moas_status_string(loaded) << ": " << shortened(load_message));
    CHECK(loaded == c.load);
  }
  if (loaded != MOAS_OK) {
    check_message(load_message, path, c.field);
    CHECK(parameter_bits(target.get()) == before);
  }
  if (loaded == MOAS_OK && c.after_load) {
    c.after_load(target.get(), good);
  } else {
    CHECK(forward_status(target.get()) == MOAS_OK);  // a failed load leaves a working model
  }

  moas_model *created = nullptr;
  const moas_status made = moas_model_create_from_file(path.c_str(), nullptr, &created);
  const std::string create_message = moas_last_error();
  ModelPtr owner(created);
  {
    INFO("moas_model_create_from_file: " << moas_status_string(made) << ": " << shortened(create_message));
    CHECK(made == c.create);
  }
  if (made != MOAS_OK) {
    check_message(create_message, path, c.field);
    CHECK(created == nullptr);
  } else if (c.after_load) {
    c.after_load(created, good);
  } else {
    CHECK(forward_status(created) == MOAS_OK);
  }
}

// The optimiser state as the library writes it: equal files mean an equal state.
Bytes optimizer_state(const moas_model *m, const TempDir &dir) {
  const std::string path = dir.file("state.optim.safetensors");
  REQUIRE(moas_optimizer_save(m, path.c_str()) == MOAS_OK);
  return hostile::read_bytes(path);
}

void run_optimizer_case(const Case &c, const TempDir &dir, const std::string &path) {
  moas_model_config cfg = hostile::tiny_config();
  cfg.seed = 2;
  ModelPtr target = make_model(cfg);
  train(target.get(), 3);
  const std::vector<uint32_t> before = parameter_bits(target.get());
  const Bytes state_before = optimizer_state(target.get(), dir);

  const moas_status loaded = moas_optimizer_load(target.get(), path.c_str());
  const std::string message = moas_last_error();
  {
    INFO("moas_optimizer_load: " << moas_status_string(loaded) << ": " << shortened(message));
    CHECK(loaded == c.load);
  }
  uint64_t steps = 0;
  REQUIRE(moas_optimizer_steps(target.get(), &steps) == MOAS_OK);
  if (loaded != MOAS_OK) {
    check_message(message, path, c.field);
    CHECK(steps == 3);
    CHECK(parameter_bits(target.get()) == before);
    CHECK(optimizer_state(target.get(), dir) == state_before);
  } else {
    CHECK(steps == 2);
  }
  // Training goes on with whichever state it has, and its weights stay finite.
  train(target.get(), 1);
  CHECK(forward_status(target.get()) == MOAS_OK);
}

void run_case(const Case &c) {
  TempDir dir;
  const Sources sources = make_sources(dir);
  const std::string path = dir.file("damaged.safetensors");
  hostile::write_bytes(path, c.file(sources));
  if (c.target == Target::Optimizer)
    run_optimizer_case(c, dir, path);
  else
    run_model_case(c, dir, sources, path);
}

// ---------------------------------------------------------------------------------------------------------------
// Hostile sizes: one call in a fresh child process (the test program re-executed), its peak RSS and wall time
// compared with an idle child's.

constexpr const char *kCallVariable = "MOAS_HOSTILE_CALL";
constexpr const char *kFileVariable = "MOAS_HOSTILE_FILE";
constexpr const char *kMessageVariable = "MOAS_HOSTILE_MESSAGE";

// The child's whole life: a tiny model (as the idle child makes too), then "load" or "create" of the file; the
// message goes to a file and the status is the exit code.
int measured_call(const std::string &call, const char *file, const char *message_file) {
  alarm(120);  // a loader that reads or allocates what the header claims must not hang the suite
  moas_model_config cfg = hostile::tiny_config();
  moas_model *model = nullptr;
  if (moas_model_create(&cfg, &model) != MOAS_OK) return 100;
  moas_status status = MOAS_OK;
  if (call == "load") {
    status = moas_model_load(model, file);
  } else if (call == "create") {
    moas_model *created = nullptr;
    status = moas_model_create_from_file(file, nullptr, &created);
    moas_model_destroy(created);
  }
  const std::string message = moas_last_error();
  if (message_file) hostile::write_bytes(message_file, Bytes(message.begin(), message.end()));
  moas_model_destroy(model);
  return (int)status;
}

// Runs before Catch's main: in a re-executed child it makes its one call and exits.
[[maybe_unused]] const bool measured_child = [] {
  const char *call = std::getenv(kCallVariable);
  if (!call) return false;
  std::_Exit(measured_call(call, std::getenv(kFileVariable), std::getenv(kMessageVariable)));
}();

struct Measured {
  int status = -1;  // the exit code, or -1 when a signal ended the child
  int signal = 0;
  long peak_rss_kib = 0;
  double seconds = 0;
  std::string message;
};

Measured measure(const std::string &call, const std::string &file, const std::string &message_file) {
  // argv and envp are built before fork: the child only calls execve.
  std::vector<std::string> env_strings = {std::string(kCallVariable) + "=" + call,
                                          std::string(kFileVariable) + "=" + file,
                                          std::string(kMessageVariable) + "=" + message_file};
  for (char **e = environ; *e; e++)
    if (std::strncmp(*e, "MOAS_HOSTILE_", 13) != 0) env_strings.push_back(*e);
  std::vector<char *> envp;
  for (std::string &s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  char exe[] = "/proc/self/exe";
  char *argv[] = {exe, nullptr};

  std::remove(message_file.c_str());  // a child that dies writes none: no stale message stands in for it
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    execve(exe, argv, envp.data());
    _exit(127);
  }
  int wait_status = 0;
  struct rusage usage;
  std::memset(&usage, 0, sizeof usage);
  REQUIRE(wait4(pid, &wait_status, 0, &usage) == pid);
  Measured m;
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  m.peak_rss_kib = usage.ru_maxrss;
  if (WIFEXITED(wait_status)) m.status = WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) m.signal = WTERMSIG(wait_status);
  if (call != "idle" && std::filesystem::exists(message_file)) {
    const Bytes text = hostile::read_bytes(message_file);
    m.message.assign(text.begin(), text.end());
  }
  return m;
}

struct HostileCase {
  std::string name;
  std::function<void(const std::string &path, const Sources &)> write;
  moas_status load, create;
  std::string load_field;  // what the load's message must name besides the path
};

const std::vector<HostileCase> &hostile_cases() {
  static const std::vector<HostileCase> cases = {
      {"size: 24 layers of width 1024 in a 9 KB file",
       [](const std::string &path, const Sources &s) {
         Safetensors f = Safetensors::parse(s.model);
         ordered_json config = f.config();
         config["n_layer"] = 24;
         config["n_embd"] = 1024;
         config["mlp_hidden"] = 4096;
         f.set_config(config);
         const size_t size = f.build().size();
         if (size < 9216) f.metadata()["user"] = std::string(9216 - size - 10, ' ');  // ",\"user\":\"\"" is 10
         hostile::write_bytes(path, f.build());
       },
       MOAS_ERR_CHECKPOINT_CONFIG, MOAS_ERR_CHECKPOINT_MISSING_TENSOR, "n_layer"},
      {"size: 1 GiB sparse file of zeros",
       [](const std::string &path, const Sources &) {
         const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
         REQUIRE(fd >= 0);
         REQUIRE(::ftruncate(fd, off_t(1) << 30) == 0);
         ::close(fd);
       },
       MOAS_ERR_CHECKPOINT_HEADER, MOAS_ERR_CHECKPOINT_HEADER, ""},
      {"size: header length 2^64-1",
       [](const std::string &path, const Sources &) {
         Bytes file = hostile::file_of("{}", Bytes(8, 0));
         hostile::set_header_length(file, UINT64_MAX);
         hostile::write_bytes(path, file);
       },
       MOAS_ERR_CHECKPOINT_HEADER, MOAS_ERR_CHECKPOINT_HEADER, ""},
      {"size: header length 99999999 in a small file",
       [](const std::string &path, const Sources &s) {
         Bytes file = s.model;
         hostile::set_header_length(file, 99999999);
         hostile::write_bytes(path, file);
       },
       MOAS_ERR_CHECKPOINT_TRUNCATED, MOAS_ERR_CHECKPOINT_TRUNCATED, ""},
      {"size: a 4 TiB tensor in a small file",
       [](const std::string &path, const Sources &s) {
         Safetensors f = Safetensors::parse(s.model);
         f.header.resize(1);  // the metadata alone
         f.data.assign(8, 0);
         f.header.push_back({kWte, {{"dtype", "F32"},
                                    {"shape", {1 << 20, 1 << 20}},
                                    {"data_offsets", {0, uint64_t(1) << 42}}}});
         hostile::write_bytes(path, f.build());
       },
       MOAS_ERR_CHECKPOINT_TRUNCATED, MOAS_ERR_CHECKPOINT_TRUNCATED, ""},
  };
  return cases;
}

void run_hostile_case(const HostileCase &c) {
  TempDir dir;
  const Sources sources = make_sources(dir);
  const std::string path = dir.file("hostile.safetensors"), message_file = dir.file("message.txt");
  c.write(path, sources);
  const Measured idle = measure("idle", "", message_file);
  INFO("idle child: exit " << idle.status << ", signal " << idle.signal << ", peak RSS " << idle.peak_rss_kib
                           << " KiB, " << idle.seconds << " s");
  REQUIRE(idle.status == 0);
  for (const auto &[call, expected] : {std::pair{"load", c.load}, std::pair{"create", c.create}}) {
    const std::string field = std::string(call) == "load" ? c.load_field : "";
    const Measured m = measure(call, path, message_file);
    INFO(call << ": exit " << m.status << " (" << moas_status_string((moas_status)m.status) << "), signal "
              << m.signal << ", peak RSS " << m.peak_rss_kib << " KiB, " << m.seconds << " s: "
              << shortened(m.message));
    CHECK(m.signal == 0);
    CHECK(m.status == (int)expected);
    check_message(m.message, path, field);
    if (!kSanitized) CHECK(m.peak_rss_kib - idle.peak_rss_kib < 64 * 1024);
    CHECK(m.seconds - idle.seconds < (kSanitized ? 10.0 : 2.0));
  }
}

// One Catch test per case, so that ctest lists each file with its verdict.
class CaseInvoker : public Catch::ITestInvoker {
 public:
  explicit CaseInvoker(std::function<void()> run) : run_(std::move(run)) {}
  void invoke() const override { run_(); }

 private:
  std::function<void()> run_;
};

[[maybe_unused]] const bool registered = [] {
  for (size_t i = 0; i < all_cases().size(); i++) {
    const Case &c = all_cases()[i];
    const char *tags = c.target == Target::Optimizer ? "[checkpoint][hostile][optimizer]" : "[checkpoint][hostile]";
    Catch::AutoReg(new CaseInvoker([i] { run_case(all_cases()[i]); }), CATCH_INTERNAL_LINEINFO, Catch::StringRef(),
                   Catch::NameAndTags(c.name, tags));
  }
  for (size_t i = 0; i < hostile_cases().size(); i++)
    Catch::AutoReg(new CaseInvoker([i] { run_hostile_case(hostile_cases()[i]); }), CATCH_INTERNAL_LINEINFO,
                   Catch::StringRef(), Catch::NameAndTags(hostile_cases()[i].name, "[checkpoint][hostile][size]"));
  return true;
}();

}  // namespace

TEST_CASE("hostile files: at least 60 cases", "[checkpoint][hostile]") {
  CHECK(all_cases().size() + hostile_cases().size() >= 60);
}
