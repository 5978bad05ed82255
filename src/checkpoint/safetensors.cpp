#include "checkpoint/safetensors.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/stat.h>
#include <unistd.h>
#endif

#include "base/error.hpp"

namespace moas::safetensors {

// Text from a file as a message may show it: bytes outside printable ASCII as \xNN, at most 120 of them, so a message
// never carries raw bytes or a megabyte-long name.
std::string printable(const std::string &text) {
  constexpr size_t kShown = 120;
  std::string out;
  for (size_t i = 0; i < text.size() && i < kShown; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += char(c);
    } else {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (text.size() > kShown) out += "... (" + std::to_string(text.size()) + " bytes)";
  return out;
}

namespace {

using json = nlohmann::json;

// The reference implementation's limit: larger headers are rejected before any allocation they would need.
constexpr uint64_t kMaxHeaderBytes = 100000000;
// serde_json's nesting limit, which the reference parses headers with.
constexpr int kMaxHeaderDepth = 127;
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

std::string in_quotes(const std::string &name) { return "'" + printable(name) + "'"; }

// nlohmann's message without its "[json.exception.parse_error.101] " id, with the bytes it quotes made printable.
std::string json_error_text(const std::exception &e) {
  std::string text = e.what();
  if (!text.empty() && text[0] == '[') {
    const size_t end = text.find("] ");
    if (end != std::string::npos) text.erase(0, end + 2);
  }
  return printable(text);
}

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

// What nlohmann::json lets through but the reference's JSON parser does not: duplicate keys (nlohmann keeps the
// last silently) and nesting deeper than kMaxHeaderDepth. Throws on the first, which also stops a hostile header's
// parse early.
struct HeaderChecker {
  const std::function<void(const std::string &)> &reject;
  std::vector<std::set<std::string>> open_objects;
  int depth = 0;

  bool operator()(int, json::parse_event_t event, json &parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        [[fallthrough]];
      case json::parse_event_t::array_start:
        if (++depth > kMaxHeaderDepth)
          reject("the header nests deeper than " + std::to_string(kMaxHeaderDepth) + " levels");
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        [[fallthrough]];
      case json::parse_event_t::array_end:
        --depth;
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && !open_objects.back().insert(parsed.get_ref<const std::string &>()).second)
          reject(open_objects.size() == 1
                     ? "tensor name " + in_quotes(parsed.get_ref<const std::string &>()) +
                           " appears more than once in the header"
                     : "key " + in_quotes(parsed.get_ref<const std::string &>()) +
                           " appears more than once in a header object");
        break;
      case json::parse_event_t::value:
        break;
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

  // The header's length from the file's first 8 bytes, checked against the format's limit and the file's size before
  // anything is read or allocated for it.
  uint64_t header_length(const uint8_t *first8, uint64_t file_size) {
    const uint64_t header_len = load_u64le(first8);
    if (header_len > kMaxHeaderBytes)
      fail_at(MOAS_ERR_CHECKPOINT_HEADER, "header length " + std::to_string(header_len) +
                                              " (file bytes [0, 8)) exceeds the format's limit of " +
                                              std::to_string(kMaxHeaderBytes) + " bytes");
    if (header_len > file_size - 8)
      fail_at(MOAS_ERR_CHECKPOINT_TRUNCATED, "header length " + std::to_string(header_len) +
                                                 " runs past the end of the " + std::to_string(file_size) +
                                                 "-byte file");
    data_start_ = 8 + header_len;
    return header_len;
  }

  // The header's tensors and metadata, their layout checked against a file of file_size bytes.
  void parse_header(const char *text, size_t size, uint64_t file_size, File *file) {
    const json header = parse_json(text, size);
    std::vector<Entry> entries;
    for (const auto &item : header.items()) {
      if (item.key() == kMetadataKey)
        read_metadata(item.value(), &file->metadata);
      else
        entries.push_back(read_entry(item.key(), item.value()));
    }
    // Order by data position; zero-size spans sort before a span starting at the same offset.
    std::stable_sort(entries.begin(), entries.end(), [](const Entry &a, const Entry &b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    check_layout(entries, file_size - data_start_);
    for (Entry &e : entries) {
      e.tensor.offset = data_start_ + e.begin;
      file->tensors.push_back(std::move(e.tensor));
    }
  }

 private:
  json parse_json(const char *text, size_t size) const {
    const std::function<void(const std::string &)> reject = [&](const std::string &why) {
      fail_at(MOAS_ERR_CHECKPOINT_HEADER, why);
    };
    // nlohmann::json ends its input at a NUL and skips a byte-order mark; the reference rejects both.
    if (const void *nul = std::memchr(text, 0, size))
      reject("the header holds a NUL byte at file offset " +
             std::to_string(8 + (static_cast<const char *>(nul) - text)));
    if (size >= 3 && std::memcmp(text, "\xEF\xBB\xBF", 3) == 0)
      reject("the header starts with a UTF-8 byte-order mark; it must start with the JSON object");
    HeaderChecker checker{reject, {}, 0};
    json header;
    try {
      header = json::parse(text, text + size, std::ref(checker));
    } catch (const json::exception &e) {
      reject("the header (file bytes [8, " + std::to_string(data_start_) + ")) is not valid UTF-8 JSON: " +
             json_error_text(e));
    }
    if (!header.is_object()) reject("the header is JSON but not an object");
    return header;
  }

  void read_metadata(const json &value, std::map<std::string, std::string> *out) const {
    if (value.is_null()) return;  // the reference reads an absent and a null "__metadata__" alike
    if (!value.is_object()) fail_at(MOAS_ERR_CHECKPOINT_HEADER, "\"__metadata__\" is not an object");
    for (const auto &kv : value.items()) {
      if (!kv.value().is_string())
        fail_at(MOAS_ERR_CHECKPOINT_HEADER, "\"__metadata__\" value " + in_quotes(kv.key()) + " is not a string");
      (*out)[kv.key()] = kv.value().get<std::string>();
    }
  }

  // A size or offset: a non-negative JSON integer ("-0" included, as the reference reads it).
  static bool read_size(const json &v, uint64_t *out) {
    if (v.is_number_unsigned()) {
      *out = v.get<uint64_t>();
      return true;
    }
    if (v.is_number_integer() && v.get<int64_t>() == 0) {
      *out = 0;
      return true;
    }
    return false;
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
      uint64_t d = 0;
      if (!read_size(dim, &d))
        fail_at(MOAS_ERR_CHECKPOINT_HEADER, who + ": \"shape\" entry " + printable(dim.dump()) +
                                                " is not a non-negative integer");
      if (d > uint64_t(std::numeric_limits<int64_t>::max()) || !checked_mul(numel, d, &numel))
        fail_at(MOAS_ERR_CHECKPOINT_LAYOUT,
                who + ": element count of shape " + printable(shape->dump()) + " overflows");
      e.tensor.shape.push_back(int64_t(d));
    }
    uint64_t nbytes = 0;
    if (!checked_mul(numel, elem_size, &nbytes) || nbytes > std::numeric_limits<size_t>::max())
      fail_at(MOAS_ERR_CHECKPOINT_LAYOUT, who + ": byte size of shape " + printable(shape->dump()) + " overflows");

    auto offsets = value.find("data_offsets");
    if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 ||
        !read_size((*offsets)[0], &e.begin) || !read_size((*offsets)[1], &e.end))
      fail_at(MOAS_ERR_CHECKPOINT_HEADER, who + ": \"data_offsets\" is not a pair of non-negative integers");
    if (e.begin > e.end)
      fail_at(MOAS_ERR_CHECKPOINT_HEADER, who + ": \"data_offsets\" " + offsets->dump() + " ends before it begins");
    if (e.end - e.begin != nbytes)
      fail_at(MOAS_ERR_CHECKPOINT_LAYOUT, describe(e) + " spans " + std::to_string(e.end - e.begin) +
                                              " bytes, but shape " + printable(shape->dump()) + " of " +
                                              e.tensor.dtype + " needs " + std::to_string(nbytes));
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

std::vector<uint8_t> File::read(const Tensor &t) const {
  if (!handle_) {
    const uint8_t *begin = bytes_.data() + t.offset;
    return std::vector<uint8_t>(begin, begin + t.nbytes);
  }
  std::vector<uint8_t> data(t.nbytes);
  if (t.nbytes == 0) return data;
  if (fseeko(handle_.get(), off_t(t.offset), SEEK_SET) != 0)
    fail(MOAS_ERR_IO, "cannot read checkpoint " + origin_ + ": " + errno_text(errno));
  const size_t got = std::fread(data.data(), 1, t.nbytes, handle_.get());
  if (got != t.nbytes) {
    if (std::ferror(handle_.get()))
      fail(MOAS_ERR_IO, "cannot read checkpoint " + origin_ + ": " + errno_text(errno));
    fail(MOAS_ERR_CHECKPOINT_TRUNCATED, origin_ + ": the file shrank while it was read: tensor " + in_quotes(t.name) +
                                            " ends at byte " + std::to_string(t.offset + t.nbytes));
  }
  return data;
}

File parse(std::vector<uint8_t> bytes, const std::string &origin) {
  Parser parser(origin);
  if (bytes.size() < 8)
    parser.fail_at(MOAS_ERR_CHECKPOINT_TRUNCATED, "file is " + std::to_string(bytes.size()) +
                                                      " bytes, too short for the 8-byte header length");
  File file;
  file.origin_ = origin;
  const uint64_t header_len = parser.header_length(bytes.data(), bytes.size());
  parser.parse_header(reinterpret_cast<const char *>(bytes.data()) + 8, size_t(header_len), bytes.size(), &file);
  file.bytes_ = std::move(bytes);
  return file;
}

File read_file(const std::string &path) {
  std::shared_ptr<std::FILE> handle(std::fopen(path.c_str(), "rb"), [](std::FILE *f) {
    if (f) std::fclose(f);
  });
  if (!handle) fail(MOAS_ERR_IO, "cannot open checkpoint " + path + ": " + errno_text(errno));
  // Only a regular file has a size to check the header against; a pipe or device (/dev/zero) could stream forever.
  struct stat info;
  if (fstat(fileno(handle.get()), &info) != 0)
    fail(MOAS_ERR_IO, "cannot stat checkpoint " + path + ": " + errno_text(errno));
  if (!S_ISREG(info.st_mode))
    fail(MOAS_ERR_IO, "checkpoint " + path + " is not a regular file (a directory, pipe or device): give a file");
  const uint64_t file_size = uint64_t(info.st_size);
  Parser parser(path);
  uint8_t first8[8];
  if (file_size < 8 || std::fread(first8, 1, 8, handle.get()) != 8)
    parser.fail_at(MOAS_ERR_CHECKPOINT_TRUNCATED, "file is " + std::to_string(file_size) +
                                                      " bytes, too short for the 8-byte header length");
  const uint64_t header_len = parser.header_length(first8, file_size);
  std::string header(size_t(header_len), '\0');
  if (std::fread(header.data(), 1, header.size(), handle.get()) != header.size())
    parser.fail_at(MOAS_ERR_CHECKPOINT_TRUNCATED, "the file shrank while its header was read");
  File file;
  file.origin_ = path;
  parser.parse_header(header.data(), header.size(), file_size, &file);
  file.handle_ = std::move(handle);
  return file;
}

std::vector<float> to_f32(const File &file, const Tensor &t) {
  const size_t elem_size = t.dtype == "F32" ? 4 : (t.dtype == "F16" || t.dtype == "BF16") ? 2 : 0;
  if (elem_size == 0)
    fail(MOAS_ERR_CHECKPOINT_DTYPE,
         "tensor " + in_quotes(t.name) + " has dtype " + printable(t.dtype) + "; only F32, F16 and BF16 can be loaded");
  const uint64_t n = t.numel();
  if (t.nbytes % elem_size != 0 || t.nbytes / elem_size != n)
    fail(MOAS_ERR_CHECKPOINT_LAYOUT, "tensor " + in_quotes(t.name) + " has " + std::to_string(t.nbytes) +
                                         " bytes of data, which does not match its shape");
  const std::vector<uint8_t> bytes = file.read(t);
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t *p = bytes.data();
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
    // Tensor names are the library's own: only a caller's metadata string can be invalid UTF-8.
    fail(MOAS_ERR_INVALID_ARGUMENT, "cannot save " + path + ": the user metadata is not valid UTF-8 (" +
                                        json_error_text(e) + "): pass UTF-8 text, e.g. JSON");
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
