#include "checkpoint/hostile_files.hpp"

#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace hostile {

using nlohmann::ordered_json;

moas_model_config tiny_config() {
  moas_model_config c;
  c.struct_size = sizeof c;
  if (moas_model_config_default(&c) != MOAS_OK) throw std::runtime_error("moas_model_config_default failed");
  c.vocab_size = 11;
  c.block_size = 8;
  c.n_layer = 1;
  c.n_head = 2;
  c.n_kv_head = 2;
  c.n_embd = 8;
  c.position = MOAS_POSITION_ROPE;
  c.attention = MOAS_ATTENTION_MOAS;
  c.moas_mode = MOAS_MODE_SOFT;
  c.moas_n_branches = 2;
  c.moas_branch_kv_heads[0] = 0;  // MHA
  c.moas_branch_kv_heads[1] = 1;  // MQA
  c.moas_branch_kv_heads[2] = 0;
  c.dropout = 0.1f;
  c.n_threads = 1;
  c.seed = 1;
  return c;
}

moas_model_config tiny_moh_config() {
  moas_model_config c = tiny_config();
  c.position = MOAS_POSITION_LEARNED;
  c.attention = MOAS_ATTENTION_MOH;
  c.n_head = 4;
  c.n_kv_head = 4;
  c.head_selection.strategy = MOAS_HEADS_MIXTURE;
  c.head_selection.num_shared_heads = 1;
  c.head_selection.num_active_routed_heads = 1;
  return c;
}

Bytes read_bytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string &path, const Bytes &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char *>(bytes.data()), (std::streamsize)bytes.size());
  if (!out) throw std::runtime_error("cannot write " + path);
}

Bytes file_of(const std::string &header_text, const Bytes &data) {
  Bytes file;
  file.reserve(8 + header_text.size() + data.size());
  for (int i = 0; i < 8; i++) file.push_back(uint8_t(uint64_t(header_text.size()) >> (8 * i)));
  file.insert(file.end(), header_text.begin(), header_text.end());
  file.insert(file.end(), data.begin(), data.end());
  return file;
}

uint64_t header_length(const Bytes &file) {
  if (file.size() < 8) throw std::runtime_error("no header length in a file of " + std::to_string(file.size()));
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | file[(size_t)i];
  return n;
}

void set_header_length(Bytes &file, uint64_t length) {
  if (file.size() < 8) file.resize(8);
  for (int i = 0; i < 8; i++) file[(size_t)i] = uint8_t(length >> (8 * i));
}

Bytes prefix(const Bytes &file, size_t size) {
  if (size > file.size()) throw std::runtime_error("prefix longer than the file");
  return Bytes(file.begin(), file.begin() + (std::ptrdiff_t)size);
}

Safetensors Safetensors::parse(const Bytes &file) {
  const uint64_t n = header_length(file);
  if (n > file.size() - 8) throw std::runtime_error("header length past the end");
  const auto header_begin = file.begin() + 8, data_begin = header_begin + (std::ptrdiff_t)n;
  const ordered_json header = ordered_json::parse(header_begin, data_begin);
  Safetensors parts;
  for (const auto &item : header.items()) parts.header.push_back({item.key(), item.value()});
  parts.data.assign(data_begin, file.end());
  return parts;
}

std::string Safetensors::header_text() const {
  std::string text = "{";
  for (const HeaderEntry &e : header) {
    if (text.size() > 1) text += ",";
    text += ordered_json(e.key).dump() + ":" + e.value.dump();
  }
  return text + "}";
}

ordered_json &Safetensors::entry(const std::string &key) {
  for (HeaderEntry &e : header)
    if (e.key == key) return e.value;
  throw std::runtime_error("no header entry " + key);
}

bool Safetensors::has(const std::string &key) const {
  for (const HeaderEntry &e : header)
    if (e.key == key) return true;
  return false;
}

std::vector<std::string> Safetensors::tensor_names() const {
  std::vector<std::string> names;
  for (const HeaderEntry &e : header)
    if (e.key != "__metadata__") names.push_back(e.key);
  return names;
}

Bytes Safetensors::tensor_bytes(const std::string &name) const {
  for (const HeaderEntry &e : header) {
    if (e.key != name) continue;
    const uint64_t begin = e.value["data_offsets"][0], end = e.value["data_offsets"][1];
    return Bytes(data.begin() + (std::ptrdiff_t)begin, data.begin() + (std::ptrdiff_t)end);
  }
  throw std::runtime_error("no tensor " + name);
}

void Safetensors::set_float(const std::string &name, size_t index, float value) {
  const uint64_t begin = entry(name)["data_offsets"][0];
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  for (int b = 0; b < 4; b++) data.at(begin + 4 * index + (size_t)b) = uint8_t(bits >> (8 * b));
}

void Safetensors::remove_tensor(const std::string &name) {
  const ordered_json offsets = entry(name)["data_offsets"];
  const uint64_t begin = offsets[0], end = offsets[1];
  data.erase(data.begin() + (std::ptrdiff_t)begin, data.begin() + (std::ptrdiff_t)end);
  std::vector<HeaderEntry> kept;
  for (HeaderEntry &e : header) {
    if (e.key == name) continue;
    if (e.key != "__metadata__" && e.value["data_offsets"][0].get<uint64_t>() >= end) {
      e.value["data_offsets"][0] = e.value["data_offsets"][0].get<uint64_t>() - (end - begin);
      e.value["data_offsets"][1] = e.value["data_offsets"][1].get<uint64_t>() - (end - begin);
    }
    kept.push_back(std::move(e));
  }
  header = std::move(kept);
}

void Safetensors::add_tensor(const std::string &name, const std::string &dtype, const ordered_json &shape,
                             const Bytes &bytes) {
  ordered_json value = {
      {"dtype", dtype}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + bytes.size()}}};
  header.push_back({name, std::move(value)});
  data.insert(data.end(), bytes.begin(), bytes.end());
}

ordered_json Safetensors::config() const {
  for (const HeaderEntry &e : header)
    if (e.key == "__metadata__") return ordered_json::parse(e.value.at("config").get<std::string>());
  throw std::runtime_error("no metadata");
}

void Safetensors::set_config(const ordered_json &config) { metadata()["config"] = config.dump(); }

Bytes floats_le(const std::vector<float> &values) {
  Bytes out;
  for (float v : values) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    for (int b = 0; b < 4; b++) out.push_back(uint8_t(bits >> (8 * b)));
  }
  return out;
}

}  // namespace hostile
