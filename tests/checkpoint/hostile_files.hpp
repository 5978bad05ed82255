// Tiny libmoas checkpoints and the means to damage them one way at a time: a safetensors file taken apart into its
// header entries (raw JSON, so they can be made wrong) and its data section, and put back together byte for byte.
// Used by the corrupt-checkpoint tests and by the fuzzers' seed corpus (fuzz/make_corpus.cpp); it throws
// std::runtime_error rather than using a test framework.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moas.h"

namespace hostile {

using Bytes = std::vector<uint8_t>;

// The model damaged files are made from: MoAS (an MHA and an MQA branch, soft routing) with RoPE, one layer, C = 8,
// dropout 0.1, one thread: about 6 KB on disk, with every config key a load compares (rope_base, dropout,
// attn_dropout, moas_aux_weight, the branches) in play.
moas_model_config tiny_config();
// MixtureOfHeads (1 shared head, 1 of 3 routed heads active), for load_balance_weight.
moas_model_config tiny_moh_config();

Bytes read_bytes(const std::string &path);
void write_bytes(const std::string &path, const Bytes &bytes);

// 8-byte little-endian header length, the header text, then the data section.
Bytes file_of(const std::string &header_text, const Bytes &data);
uint64_t header_length(const Bytes &file);
void set_header_length(Bytes &file, uint64_t length);
Bytes prefix(const Bytes &file, size_t size);

struct HeaderEntry {
  std::string key;                // "__metadata__" or a tensor name; may repeat
  nlohmann::ordered_json value;   // as written in the file
};

// A safetensors file as parts, in file order. Edits keep the data section consistent with the offsets unless the
// caller writes data_offsets itself.
struct Safetensors {
  std::vector<HeaderEntry> header;
  Bytes data;

  static Safetensors parse(const Bytes &file);
  std::string header_text() const;  // compact JSON; duplicate keys are written as they are
  Bytes build() const { return file_of(header_text(), data); }

  nlohmann::ordered_json &entry(const std::string &key);  // the first entry of that key; throws if absent
  bool has(const std::string &key) const;
  std::vector<std::string> tensor_names() const;

  // The tensor's bytes (its data_offsets span).
  Bytes tensor_bytes(const std::string &name) const;
  // Overwrites float `index` of an F32 tensor.
  void set_float(const std::string &name, size_t index, float value);
  // Removes the tensor and its bytes; the spans after it move down.
  void remove_tensor(const std::string &name);
  // Appends a tensor whose span follows the current data.
  void add_tensor(const std::string &name, const std::string &dtype, const nlohmann::ordered_json &shape,
                  const Bytes &bytes);

  // The metadata "config" as JSON, and its replacement (any JSON value, written as the metadata string).
  nlohmann::ordered_json config() const;
  void set_config(const nlohmann::ordered_json &config);
  nlohmann::ordered_json &metadata() { return entry("__metadata__"); }
};

Bytes floats_le(const std::vector<float> &values);

}  // namespace hostile
