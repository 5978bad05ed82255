#include "checkpoint/safetensors.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "base/error.hpp"

namespace moas::safetensors {
namespace {

using json = nlohmann::json;

// The reference implementation's limit: larger headers are rejected before any allocation they would need.
constexpr uint64_t kMaxHeaderBytes = 100000000;
constexpr const char *kMetadataKey = "__metadata__";

// Bytes per element, 0 for a dtype safetensors does not define.
size_t dtype_size(const std::string &dtype) {
  static const std::map<std::string, size_t> sizes = {
      {"F64", 8},  {"F32", 4},      {"F16", 2},      {"BF16", 2},     {"I64", 8}, {"I32", 4}, {"I16", 2},
      {"I8", 1},   {"U64", 8},      {"U32", 4},      {"U16", 2},      {"U8", 1},  {"BOOL", 1},
      {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
  };
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

std::string in_quotes(const std::string &name) { return "'" + name + "'"; }

// Explicit byte assembly keeps the file format little-endian whatever the host is.
uint64_t load_u64le(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint32_t load_u32le(const uint8_t *p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

uint16_t load_u16le(const uint8_t *p) { return uint16_t(p[0] | p[1] << 8); }

float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h >> 15) << 31;
  const uint32_t exponent = (h >> 10) & 0x1f;
  const uint32_t mantissa = h & 0x3ff;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24 is exact in float
    const float magnitude = std::ldexp(float(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) return bits_to_float(sign | 0x7f800000u | mantissa << 13);  // inf, NaN (payload kept)
  return bits_to_float(sign | (exponent - 15 + 127) << 23 | mantissa << 13);
}

// Overflow-checked a * b; false if it does not fit.
bool checked_mul(uint64_t a, uint64_t b, uint64_t *out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

struct Entry {
  Tensor tensor;  // data still unset
  uint64_t begin = 0, end = 0;
};

// nlohmann::json silently keeps the last of duplicate keys; the reader must see them to reject the header.
struct DuplicateKeyFinder {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  bool at_top_level = false;
  bool found = false;

  bool operator()(int depth, json::parse_event_t event, json &parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !open_objects.empty() && !found) {
      const std::string &key = parsed.get_ref<const std::string &>();
      if (!open_objects.back().insert(key).second) {
        found = true;
        duplicate = key;
        at_top_level = depth == 1;
      }
    }
    return true;
  }
};

class Parser {
 public:
  explicit Parser(const std::string &origin) : origin_(origin) {}

  [[noreturn]] void fail_at(moas_status status, const std::string &what) const { fail(status, origin_ + ": " + what); }

  // "tensor 'x'" plus where its data lies in the file, for messages.
  std::string describe(const Entry &e) const {
    return "tensor " + in_quotes(e.tensor.name) + " (data offsets [" + std::to_string(e.begin) + ", " +
           std::to_string(e.end) + "), file bytes [" + std::to_string(data_start_ + e.begin) + ", " +
           std::to_string(data_start_ + e.end) + "))";
  }

  File run(std::vector<uint8_t> bytes) {
    if (bytes.size() < 8)
      fail_at(MOAS_ERR_CHECKPOINT_TRUNCATED, "file is " + std::to_string(bytes.size()) +
                                                 " bytes, too short for the 8-byte header length");
    const uint64_t header_len = load_u64le(bytes.data());
    if (header_len > kMaxHeaderBytes)
      fail_at(MOAS_ERR_CHECKPOINT_HEADER, "header length " + std::to_string(header_len) + " (file bytes [0, 8)) exceeds " +
                                              std::to_string(kMaxHeaderBytes) + " bytes");
    if (header_len > bytes.size() - 8)
      fail_at(MOAS_ERR_CHECKPOINT_TRUNCATED, "header length " + std::to_string(header_len) + " runs past the end of the " +
                                                 std::to_string(bytes.size()) + "-byte file");
    data_start_ = 8 + header_len;
    const uint64_t data_size = bytes.size() - data_start_;

    const json header = parse_json(reinterpret_cast<const char *>(bytes.data()) + 8, size_t(header_len));

    File file;
    std::vector<Entry> entries;
    for (const auto &item : header.items()) {
      if (item.key() == kMetadataKey)
        read_metadata(item.value(), &file.metadata);
      else
        entries.push_back(read_entry(item.key(), item.value()));
    }

    // Order by data position; zero-size spans sort before a span starting at the same offset.
    std::stable_sort(entries.begin(), entries.end(), [](const Entry &a, const Entry &b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    check_layout(entries, data_size);

    file.bytes = std::move(bytes);
    const uint8_t *data = file.bytes.data() + data_start_;
    for (Entry &e : entries) {
      e.tensor.data = data + e.begin;
      file.tensors.push_back(std::move(e.tensor));
    }
    return file;
  }

 private:
  json parse_json(const char *text, size_t size) const {
    DuplicateKeyFinder finder;
    json header;
    try {
      header = json::parse(text, text + size, std::ref(finder));
    } catch (const json::exception &e) {
      fail_at(MOAS_ERR_CHECKPOINT_HEADER, "header (file bytes [8, " + std::to_string(data_start_) +
                                              ")) is not valid UTF-8 JSON: " + e.what());
    }
    if (finder.found)
      fail_at(MOAS_ERR_CHECKPOINT_HEADER,
              finder.at_top_level ? "tensor name " + in_quotes(finder.duplicate) + " appears more than once in the header"
                                  : "key " + in_quotes(finder.duplicate) + " appears more than once in a header object");
    if (!header.is_object()) fail_at(MOAS_ERR_CHECKPOINT_HEADER, "header is JSON but not an object");
    return header;
  }

  void read_metadata(const json &value, std::map<std::string, std::string> *out) const {
    if (!value.is_object()) fail_at(MOAS_ERR_CHECKPOINT_HEADER, "\"__metadata__\" is not an object");
    for (const auto &kv : value.items()) {
      if (!kv.value().is_string())
        fail_at(MOAS_ERR_CHECKPOINT_HEADER, "\"__metadata__\" value " + in_quotes(kv.key()) + " is not a string");
      (*out)[kv.key()] = kv.value().get<std::string>();
    }
  }

  Entry read_entry(const std::string &name, const json &value) const {
    const std::string who = "tensor " + in_quotes(name);
    if (!value.is_object()) fail_at(MOAS_ERR_CHECKPOINT_HEADER, who + ": header entry is not an object");
    Entry e;
    e.tensor.name = name;

    auto dtype = value.find("dtype");
    if (dtype == value.end() || !dtype->is_string())
      fail_at(MOAS_ERR_CHECKPOINT_HEADER, who + ": \"dtype\" is missing or not a string");
    e.tensor.dtype = dtype->get<std::string>();
    const size_t elem_size = dtype_size(e.tensor.dtype);
    if (elem_size == 0) fail_at(MOAS_ERR_CHECKPOINT_DTYPE, who + ": unknown dtype " + in_quotes(e.tensor.dtype));

    auto shape = value.find("shape");
    if (shape == value.end() || !shape->is_array())
      fail_at(MOAS_ERR_CHECKPOINT_HEADER, who + ": \"shape\" is missing or not an array");
    uint64_t numel = 1;
    for (const json &dim : *shape) {
      if (dim.is_number_integer() && !dim.is_number_unsigned())
        fail_at(MOAS_ERR_CHECKPOINT_HEADER, who + ": \"shape\" has a negative dimension " + dim.dump());
      if (!dim.is_number_unsigned())
        fail_at(MOAS_ERR_CHECKPOINT_HEADER, who + ": \"shape\" entry " + dim.dump() + " is not an integer");
      const uint64_t d = dim.get<uint64_t>();
      if (d > uint64_t(std::numeric_limits<int64_t>::max()) || !checked_mul(numel, d, &numel))
        fail_at(MOAS_ERR_CHECKPOINT_LAYOUT, who + ": element count of shape " + shape->dump() + " overflows");
      e.tensor.shape.push_back(int64_t(d));
    }
    uint64_t nbytes = 0;
    if (!checked_mul(numel, elem_size, &nbytes) || nbytes > std::numeric_limits<size_t>::max())
      fail_at(MOAS_ERR_CHECKPOINT_LAYOUT, who + ": byte size of shape " + shape->dump() + " overflows");

    auto offsets = value.find("data_offsets");
    if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned())
      fail_at(MOAS_ERR_CHECKPOINT_HEADER, who + ": \"data_offsets\" is not a pair of non-negative integers");
    e.begin = (*offsets)[0].get<uint64_t>();
    e.end = (*offsets)[1].get<uint64_t>();
    if (e.begin > e.end)
      fail_at(MOAS_ERR_CHECKPOINT_HEADER, who + ": \"data_offsets\" " + offsets->dump() + " ends before it begins");
    if (e.end - e.begin != nbytes)
      fail_at(MOAS_ERR_CHECKPOINT_LAYOUT, describe(e) + " spans " + std::to_string(e.end - e.begin) +
                                              " bytes, but shape " + shape->dump() + " of " + e.tensor.dtype +
                                              " needs " + std::to_string(nbytes));
    e.tensor.nbytes = size_t(nbytes);
    return e;
  }

  void check_layout(const std::vector<Entry> &entries, uint64_t data_size) const {
    // A file cut short also breaks the "no trailing bytes" rule; say "truncated", the likelier cause, first.
    const Entry *furthest = nullptr;
    for (const Entry &e : entries)
      if (!furthest || e.end > furthest->end) furthest = &e;
    if (furthest && furthest->end > data_size)
      fail_at(MOAS_ERR_CHECKPOINT_TRUNCATED, describe(*furthest) + " ends past the end of the " +
                                                 std::to_string(data_start_ + data_size) + "-byte file");

    uint64_t expected = 0;
    const Entry *previous = nullptr;
    for (const Entry &e : entries) {
      if (e.begin > expected)
        fail_at(MOAS_ERR_CHECKPOINT_LAYOUT, "file bytes [" + std::to_string(data_start_ + expected) + ", " +
                                                std::to_string(data_start_ + e.begin) +
                                                ") belong to no tensor (gap before " + describe(e) + ")");
      if (e.begin < expected)
        fail_at(MOAS_ERR_CHECKPOINT_LAYOUT, describe(e) + " overlaps " + describe(*previous));
      expected = e.end;
      previous = &e;
    }
    if (expected != data_size)
      fail_at(MOAS_ERR_CHECKPOINT_LAYOUT, std::to_string(data_size - expected) + " trailing bytes at file offset " +
                                              std::to_string(data_start_ + expected) + " belong to no tensor");
  }

  const std::string &origin_;
  uint64_t data_start_ = 8;
};

// Removes the temporary file unless the write was committed, so a failed save leaves nothing behind.
struct TempFile {
  std::string path;
  std::FILE *handle = nullptr;
  bool committed = false;
  ~TempFile() {
    if (handle) std::fclose(handle);
    if (!committed) std::remove(path.c_str());
  }
};

}  // namespace

uint64_t Tensor::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= uint64_t(d);
  return n;
}

const Tensor *File::find(const std::string &name) const {
  for (const Tensor &t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

File parse(std::vector<uint8_t> bytes, const std::string &origin) { return Parser(origin).run(std::move(bytes)); }

File read_file(const std::string &path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE *)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(MOAS_ERR_IO, "cannot open checkpoint " + path + ": " + errno_text(errno));
  std::vector<uint8_t> bytes;
  std::error_code ec;
  const auto expected_size = std::filesystem::file_size(path, ec);
  if (!ec) bytes.reserve(size_t(expected_size));
  // Read until EOF rather than trusting the size, which may change or be unknown (pipes).
  constexpr size_t kChunk = size_t(1) << 20;
  for (;;) {
    const size_t old = bytes.size();
    bytes.resize(old + kChunk);
    const size_t got = std::fread(bytes.data() + old, 1, kChunk, f.get());
    bytes.resize(old + got);
    if (got < kChunk) break;
  }
  if (std::ferror(f.get())) fail(MOAS_ERR_IO, "cannot read checkpoint " + path + ": " + errno_text(errno));
  return parse(std::move(bytes), path);
}

std::vector<float> to_f32(const Tensor &t) {
  const size_t elem_size = t.dtype == "F32" ? 4 : (t.dtype == "F16" || t.dtype == "BF16") ? 2 : 0;
  if (elem_size == 0)
    fail(MOAS_ERR_CHECKPOINT_DTYPE,
         "tensor " + in_quotes(t.name) + " has dtype " + t.dtype + "; only F32, F16 and BF16 can be loaded");
  const uint64_t n = t.numel();
  if (t.nbytes % elem_size != 0 || t.nbytes / elem_size != n || (n > 0 && !t.data))
    fail(MOAS_ERR_CHECKPOINT_LAYOUT, "tensor " + in_quotes(t.name) + " has " + std::to_string(t.nbytes) +
                                         " bytes of data, which does not match its shape");
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t *p = t.data;
  if (t.dtype == "F32") {
    for (size_t i = 0; i < out.size(); ++i) out[i] = bits_to_float(load_u32le(p + 4 * i));
  } else if (t.dtype == "F16") {
    for (size_t i = 0; i < out.size(); ++i) out[i] = half_to_float(load_u16le(p + 2 * i));
  } else {  // BF16 is the upper half of an F32
    for (size_t i = 0; i < out.size(); ++i) out[i] = bits_to_float(uint32_t(load_u16le(p + 2 * i)) << 16);
  }
  return out;
}

void write_file(const std::string &path, const std::vector<TensorToWrite> &tensors,
                const std::map<std::string, std::string> &metadata) {
  // ordered_json keeps the header in the order the tensors are written, which makes files easy to inspect.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto &kv : metadata) meta[kv.first] = kv.second;
    header[kMetadataKey] = std::move(meta);
  }
  std::set<std::string> names;
  std::vector<uint64_t> counts;
  uint64_t offset = 0;
  for (const TensorToWrite &t : tensors) {
    const std::string who = "cannot save tensor " + in_quotes(t.name) + " to " + path + ": ";
    MOAS_REQUIRE(t.name != kMetadataKey, MOAS_ERR_INTERNAL, who + "the name is reserved");
    MOAS_REQUIRE(names.insert(t.name).second, MOAS_ERR_INTERNAL, who + "the name is used twice");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      MOAS_REQUIRE(d >= 0, MOAS_ERR_INTERNAL, who + "negative dimension " + std::to_string(d));
      MOAS_REQUIRE(checked_mul(numel, uint64_t(d), &numel), MOAS_ERR_INTERNAL, who + "element count overflows");
    }
    uint64_t nbytes = 0;
    MOAS_REQUIRE(checked_mul(numel, 4, &nbytes) && offset + nbytes >= offset, MOAS_ERR_INTERNAL,
                 who + "size overflows");
    MOAS_REQUIRE(numel == 0 || t.data, MOAS_ERR_INTERNAL, who + "no data");
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = "F32";
    entry["shape"] = t.shape;
    entry["data_offsets"] = {offset, offset + nbytes};
    header[t.name] = std::move(entry);
    counts.push_back(numel);
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception &e) {
    fail(MOAS_ERR_INTERNAL, "cannot save " + path + ": a tensor name or metadata string is not UTF-8: " + e.what());
  }
  // Aligns the data section to 8 bytes, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');

  TempFile tmp;
  tmp.path = path + ".tmp";
  tmp.handle = std::fopen(tmp.path.c_str(), "wb");
  if (!tmp.handle) fail(MOAS_ERR_IO, "cannot create " + tmp.path + ": " + errno_text(errno));
  auto put = [&](const void *p, size_t n) {
    if (n && std::fwrite(p, 1, n, tmp.handle) != n)
      fail(MOAS_ERR_IO, "cannot write " + tmp.path + ": " + errno_text(errno));
  };
  uint8_t len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
  put(len_bytes, 8);
  put(text.data(), text.size());

  // Floats go out byte by byte in little-endian order through a bounded buffer, whatever the host's order.
  std::vector<uint8_t> buffer;
  constexpr size_t kChunkFloats = size_t(1) << 16;
  for (size_t k = 0; k < tensors.size(); ++k) {
    for (uint64_t i = 0; i < counts[k]; i += kChunkFloats) {
      const size_t n = size_t(std::min<uint64_t>(kChunkFloats, counts[k] - i));
      buffer.resize(4 * n);
      for (size_t j = 0; j < n; ++j) {
        uint32_t bits;
        std::memcpy(&bits, tensors[k].data + i + j, 4);
        for (int b = 0; b < 4; ++b) buffer[4 * j + b] = uint8_t(bits >> (8 * b));
      }
      put(buffer.data(), buffer.size());
    }
  }

  if (std::fflush(tmp.handle) != 0) fail(MOAS_ERR_IO, "cannot write " + tmp.path + ": " + errno_text(errno));
#if defined(__unix__) || defined(__APPLE__)
  // Without this a crash soon after the rename can leave an empty checkpoint under the final name.
  if (fsync(fileno(tmp.handle)) != 0) fail(MOAS_ERR_IO, "cannot sync " + tmp.path + ": " + errno_text(errno));
#endif
  std::FILE *handle = tmp.handle;
  tmp.handle = nullptr;
  if (std::fclose(handle) != 0) fail(MOAS_ERR_IO, "cannot close " + tmp.path + ": " + errno_text(errno));
  std::error_code ec;
  std::filesystem::rename(tmp.path, path, ec);
  if (ec) fail(MOAS_ERR_IO, "cannot rename " + tmp.path + " to " + path + ": " + ec.message());
  tmp.committed = true;
}

}  // namespace moas::safetensors
