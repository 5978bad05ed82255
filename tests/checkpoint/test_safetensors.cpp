#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "base/error.hpp"
#include "checkpoint/safetensors.hpp"

namespace fs = std::filesystem;
namespace st = moas::safetensors;

namespace {

// A fresh directory per test, removed afterwards, so tests never collide or leave files behind.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path = fs::temp_directory_path() /
           ("moas_safetensors_test_" + std::to_string(stamp) + "_" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string &name) const { return (path / name).string(); }
};

void append_u64le(std::vector<uint8_t> *out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(uint8_t(v >> (8 * i)));
}

// A safetensors file from a literal header and data section; header_len overrides the length field.
std::vector<uint8_t> make_file(const std::string &header, const std::vector<uint8_t> &data,
                               uint64_t header_len = UINT64_MAX) {
  std::vector<uint8_t> out;
  append_u64le(&out, header_len == UINT64_MAX ? header.size() : header_len);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<uint8_t> zeros(size_t n) { return std::vector<uint8_t>(n, 0); }

// The status parse fails with (MOAS_OK if it succeeds); the message is kept for content checks.
moas_status parse_status(const std::vector<uint8_t> &bytes, std::string *message = nullptr) {
  try {
    st::parse(bytes, "test.safetensors");
  } catch (const moas::Error &e) {
    if (message) *message = e.what();
    return e.status();
  } catch (...) {
    return MOAS_ERR_INTERNAL;  // any other exception is a bug in the reader
  }
  return MOAS_OK;
}

moas_status parse_status(const std::string &header, const std::vector<uint8_t> &data, std::string *message = nullptr) {
  return parse_status(make_file(header, data), message);
}

uint32_t float_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

float bits_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

std::vector<uint8_t> read_bytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Two adjacent F32 tensors of two elements each, 16 data bytes.
const std::string kTwoTensors =
    R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";

}  // namespace

TEST_CASE("safetensors: write then read round-trips bit-exactly", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");

  const std::vector<float> b = {1.5f, -0.0f, std::numeric_limits<float>::denorm_min(),
                                std::numeric_limits<float>::infinity(), std::numeric_limits<float>::max(),
                                bits_float(0x7fc12345u)};  // a NaN with a payload
  const std::vector<float> a = {3.0f, -7.25f, 1e-30f, 42.0f};
  const std::vector<float> scalar = {0.125f};
  const std::vector<st::TensorToWrite> tensors = {
      {"transformer.h.0.attn.c_attn.weight", {2, 3}, b.data()},
      {"empty", {0, 5}, nullptr},  // zero-size, between two others
      {"a", {4}, a.data()},
      {"scalar", {}, scalar.data()},
  };
  const std::map<std::string, std::string> metadata = {{"config", R"({"n_layer":2})"}, {"vocab", "h\u00e9llo"}};

  // Written twice: the second write must replace the first through the rename.
  st::write_file(path, {{"old", {1}, a.data()}}, {});
  st::write_file(path, tensors, metadata);
  CHECK_FALSE(fs::exists(path + ".tmp"));

  const std::vector<uint8_t> raw = read_bytes(path);
  REQUIRE(raw.size() >= 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | raw[i];
  CHECK(header_len % 8 == 0);
  CHECK(raw.size() == 8 + header_len + 4 * (6 + 4 + 1));

  const st::File file = st::read_file(path);
  CHECK(file.metadata == metadata);
  REQUIRE(file.tensors.size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const st::Tensor &t = file.tensors[i];
    CHECK(t.name == tensors[i].name);
    CHECK(t.dtype == "F32");
    CHECK(t.shape == tensors[i].shape);
    const std::vector<float> values = st::to_f32(file, t);
    REQUIRE(values.size() == t.numel());
    for (size_t j = 0; j < values.size(); ++j) CHECK(float_bits(values[j]) == float_bits(tensors[i].data[j]));
  }
  CHECK(file.tensors[1].numel() == 0);
  CHECK(file.tensors[3].numel() == 1);
  REQUIRE(file.find("a") != nullptr);
  CHECK(file.find("a")->shape == std::vector<int64_t>{4});
  CHECK(file.find("old") == nullptr);
}

TEST_CASE("safetensors: an empty file with no tensors is valid", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("empty.safetensors");
  st::write_file(path, {}, {});
  const st::File file = st::read_file(path);
  CHECK(file.tensors.empty());
  CHECK(file.metadata.empty());
  CHECK(parse_status("{}", {}) == MOAS_OK);
  CHECK(parse_status("{}   \n ", {}) == MOAS_OK);  // trailing whitespace padding is allowed
}

TEST_CASE("safetensors: F16 values convert exactly", "[safetensors]") {
  const std::vector<std::pair<uint16_t, float>> cases = {
      {0x3c00, 1.0f},
      {0xc000, -2.0f},
      {0x7bff, 65504.0f},                       // largest finite
      {0x0001, std::ldexp(1.0f, -24)},          // smallest subnormal
      {0x03ff, std::ldexp(1023.0f, -24)},       // largest subnormal
      {0x0400, std::ldexp(1.0f, -14)},          // smallest normal
      {0x3555, 0.333251953125f},
      {0x8000, -0.0f},
      {0x7c00, std::numeric_limits<float>::infinity()},
      {0xfc00, -std::numeric_limits<float>::infinity()},
  };
  std::vector<uint8_t> data;
  for (const auto &c : cases) {
    data.push_back(uint8_t(c.first));
    data.push_back(uint8_t(c.first >> 8));
  }
  data.push_back(0x00);  // a NaN last
  data.push_back(0x7e);
  const size_t n = cases.size() + 1;
  const std::string header = R"({"h":{"dtype":"F16","shape":[)" + std::to_string(n) + R"(],"data_offsets":[0,)" +
                             std::to_string(2 * n) + "]}}";
  const st::File file = st::parse(make_file(header, data), "f16.safetensors");
  const std::vector<float> values = st::to_f32(file, file.tensors.at(0));
  REQUIRE(values.size() == n);
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO("half bits 0x" << std::hex << cases[i].first);
    CHECK(float_bits(values[i]) == float_bits(cases[i].second));
  }
  CHECK(std::isnan(values.back()));
}

TEST_CASE("safetensors: BF16 values convert exactly", "[safetensors]") {
  const std::vector<std::pair<uint16_t, float>> cases = {
      {0x3f80, 1.0f},
      {0xc040, -3.0f},
      {0x4049, 3.140625f},
      {0x0001, bits_float(0x00010000u)},  // a float subnormal
      {0x8000, -0.0f},
      {0x7f80, std::numeric_limits<float>::infinity()},
  };
  std::vector<uint8_t> data;
  for (const auto &c : cases) {
    data.push_back(uint8_t(c.first));
    data.push_back(uint8_t(c.first >> 8));
  }
  const std::string header = R"({"__metadata__":{"format":"pt"},"x":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]}})";
  const st::File file = st::parse(make_file(header, data), "bf16.safetensors");
  CHECK(file.metadata.at("format") == "pt");
  const std::vector<float> values = st::to_f32(file, file.tensors.at(0));
  REQUIRE(values.size() == cases.size());
  for (size_t i = 0; i < cases.size(); ++i) CHECK(float_bits(values[i]) == float_bits(cases[i].second));
}

TEST_CASE("safetensors: other dtypes parse but do not convert", "[safetensors]") {
  const std::string header = R"({"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
                             R"("m":{"dtype":"BOOL","shape":[3],"data_offsets":[16,19]},)"
                             R"("q":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[19,20]}})";
  const st::File file = st::parse(make_file(header, zeros(20)), "ints.safetensors");
  REQUIRE(file.tensors.size() == 3);
  CHECK(file.tensors[0].nbytes == 16);
  try {
    st::to_f32(file, file.tensors[0]);
    FAIL("to_f32 accepted I64");
  } catch (const moas::Error &e) {
    CHECK(e.status() == MOAS_ERR_CHECKPOINT_DTYPE);
    CHECK(std::string(e.what()).find("ids") != std::string::npos);
  }
}

TEST_CASE("safetensors: a file cut short anywhere is truncated", "[safetensors]") {
  const std::vector<uint8_t> full = make_file(kTwoTensors, zeros(16));
  REQUIRE(parse_status(full) == MOAS_OK);
  for (size_t cut = 0; cut < full.size(); ++cut) {
    INFO("cut at " << cut << " of " << full.size());
    const std::vector<uint8_t> prefix(full.begin(), full.begin() + long(cut));
    CHECK(parse_status(prefix) == MOAS_ERR_CHECKPOINT_TRUNCATED);
  }
  // A header length beyond the file, but under the header limit.
  CHECK(parse_status(make_file("{}", {}, 1000)) == MOAS_ERR_CHECKPOINT_TRUNCATED);

  std::string message;
  CHECK(parse_status(make_file(kTwoTensors, zeros(12)), &message) == MOAS_ERR_CHECKPOINT_TRUNCATED);
  CHECK(message.find("test.safetensors") != std::string::npos);
  CHECK(message.find("'b'") != std::string::npos);
}

TEST_CASE("safetensors: header failures", "[safetensors]") {
  // The size limit is checked before the length is compared with the file, as in the reference.
  CHECK(parse_status(make_file("{}", {}, 100000001)) == MOAS_ERR_CHECKPOINT_HEADER);
  CHECK(parse_status(make_file("{}", {}, UINT64_MAX - 1)) == MOAS_ERR_CHECKPOINT_HEADER);

  const auto header_error = [](const std::string &header, const std::vector<uint8_t> &data) {
    INFO("header: " << header);
    CHECK(parse_status(header, data) == MOAS_ERR_CHECKPOINT_HEADER);
  };
  header_error("", {});
  header_error(R"({"a":)", {});
  header_error("{\"\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", {});  // not UTF-8
  header_error("[1,2]", {});
  header_error("42", {});
  header_error(R"({"a":[1]})", {});
  header_error(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", zeros(8));
  header_error(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", zeros(8));
  header_error(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", zeros(8));
  header_error(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", zeros(8));
  header_error(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", zeros(8));
  header_error(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", zeros(8));
  header_error(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", zeros(8));
  header_error(R"({"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})", zeros(8));
  header_error(R"({"a":{"dtype":"F32","shape":[2]}})", zeros(8));
  header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", zeros(8));
  header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", zeros(8));
  header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", zeros(8));
  header_error(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", zeros(8));
  header_error(R"({"__metadata__":["x"]})", {});
  header_error(R"({"__metadata__":{"step":3}})", {});

  std::string message;
  CHECK(parse_status(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", zeros(8), &message) ==
        MOAS_ERR_CHECKPOINT_HEADER);
  CHECK(message.find("'a'") != std::string::npos);
  CHECK(message.find("negative") != std::string::npos);
}

TEST_CASE("safetensors: what nlohmann lets through", "[safetensors]") {
  const std::string entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  std::string message;
  // A NUL ends nlohmann's input: whatever follows it, valid or not, must still be read (and refused).
  CHECK(parse_status("{" + entry + std::string("}\0 junk", 7), zeros(8), &message) ==
        MOAS_ERR_CHECKPOINT_HEADER);
  CHECK(message.find("NUL") != std::string::npos);
  CHECK(parse_status("{" + entry + std::string("\0,\"b\":1}", 8), zeros(8)) ==
        MOAS_ERR_CHECKPOINT_HEADER);
  CHECK(parse_status("\xEF\xBB\xBF{" + entry + "}", zeros(8), &message) == MOAS_ERR_CHECKPOINT_HEADER);
  CHECK(message.find("byte-order mark") != std::string::npos);
  // The reference's JSON parser refuses 128 levels of nesting; an ignored field may not nest deeper either (here the
  // header object and the entry take two levels).
  const std::string deep = std::string(127, '[') + std::string(127, ']');
  CHECK(parse_status("{" + entry.substr(0, entry.size() - 1) + ",\"x\":" + deep.substr(2, 250) + "}}", zeros(8)) ==
        MOAS_OK);
  CHECK(parse_status("{" + entry.substr(0, entry.size() - 1) + ",\"x\":" + deep + "}}", zeros(8), &message) ==
        MOAS_ERR_CHECKPOINT_HEADER);
  CHECK(message.find("nests deeper") != std::string::npos);
  CHECK(parse_status(std::string(100000, '['), {}) == MOAS_ERR_CHECKPOINT_HEADER);
  // Messages show a hostile name shortened and its bytes escaped.
  const std::string name = "\x01\xff" + std::string(1 << 20, 'n');
  CHECK(parse_status(R"({")" + name + R"(":{"dtype":"Q7","shape":[],"data_offsets":[0,0]}})", {}, &message) ==
        MOAS_ERR_CHECKPOINT_HEADER);  // not UTF-8
  CHECK(parse_status(R"({")" + name.substr(2) + R"(":{"dtype":"Q7","shape":[],"data_offsets":[0,0]}})", {},
                     &message) == MOAS_ERR_CHECKPOINT_DTYPE);
  CHECK(message.size() < 400);
  CHECK(message.find("1048576 bytes") != std::string::npos);
  CHECK(parse_status("{\"a\":\x01}", {}, &message) == MOAS_ERR_CHECKPOINT_HEADER);
  CHECK(message.find("[json.exception") == std::string::npos);
  CHECK(message.find('\x01') == std::string::npos);
}

TEST_CASE("safetensors: only regular files are read", "[safetensors]") {
  TempDir dir;
  for (const std::string &path : {std::string("/dev/zero"), dir.path.string()}) {
    INFO(path);
    try {
      st::read_file(path);
      FAIL("read_file accepted " << path);
    } catch (const moas::Error &e) {
      CHECK(e.status() == MOAS_ERR_IO);
      CHECK(std::string(e.what()).find("regular file") != std::string::npos);
    }
  }
}

TEST_CASE("safetensors: duplicate names are rejected", "[safetensors]") {
  std::string message;
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";
  CHECK(parse_status(header, zeros(16), &message) == MOAS_ERR_CHECKPOINT_HEADER);
  CHECK(message.find("'a'") != std::string::npos);
  CHECK(parse_status(R"({"__metadata__":{"k":"1","k":"2"}})", {}) == MOAS_ERR_CHECKPOINT_HEADER);
}

TEST_CASE("safetensors: unknown dtypes are rejected", "[safetensors]") {
  std::string message;
  CHECK(parse_status(R"({"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", zeros(8), &message) ==
        MOAS_ERR_CHECKPOINT_DTYPE);
  CHECK(message.find("'w'") != std::string::npos);
  CHECK(parse_status(R"({"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", zeros(8)) ==
        MOAS_ERR_CHECKPOINT_DTYPE);
}

TEST_CASE("safetensors: layout failures", "[safetensors]") {
  const auto layout_error = [](const std::string &header, size_t data_bytes) {
    INFO("header: " << header);
    CHECK(parse_status(header, zeros(data_bytes)) == MOAS_ERR_CHECKPOINT_LAYOUT);
  };
  // Gap between tensors, and a first tensor not at 0.
  layout_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})", 20);
  layout_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  // Overlap.
  layout_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  // Trailing bytes after the last tensor, and data with no tensor at all.
  layout_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 12);
  layout_error("{}", 1);
  // Span size disagrees with shape x dtype size.
  layout_error(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  layout_error(R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}})", 8);
  // Overflow in the element count, in a dimension, and in the byte count.
  layout_error(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0);
  layout_error(R"({"a":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,0]}})", 0);
  layout_error(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0);
  layout_error(R"({"a":{"dtype":"F32","shape":[0,18446744073709551615,2],"data_offsets":[0,0]}})", 0);

  std::string message;
  CHECK(parse_status(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                     zeros(20), &message) == MOAS_ERR_CHECKPOINT_LAYOUT);
  CHECK(message.find("test.safetensors") != std::string::npos);
  CHECK(message.find("'b'") != std::string::npos);
}

TEST_CASE("safetensors: zero-size tensors may share an offset", "[safetensors]") {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]},)"
                             R"("f":{"dtype":"BF16","shape":[3,0],"data_offsets":[8,8]},)"
                             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  const st::File file = st::parse(make_file(header, zeros(12)), "z.safetensors");
  REQUIRE(file.tensors.size() == 4);
  CHECK(file.tensors.front().name == "a");
  CHECK(file.tensors.back().name == "b");
  CHECK(st::to_f32(file, *file.find("f")).empty());
}

TEST_CASE("safetensors: I/O failures", "[safetensors]") {
  TempDir dir;
  const float x = 1.0f;

  SECTION("writing into a missing directory") {
    const std::string path = dir.file("missing/model.safetensors");
    try {
      st::write_file(path, {{"x", {1}, &x}}, {});
      FAIL("write_file succeeded");
    } catch (const moas::Error &e) {
      CHECK(e.status() == MOAS_ERR_IO);
    }
    CHECK(fs::is_empty(dir.path));
  }

  SECTION("a failed rename removes the temporary") {
    const std::string path = dir.file("occupied");
    fs::create_directories(fs::path(path) / "child");  // a non-empty directory cannot be replaced by a file
    try {
      st::write_file(path, {{"x", {1}, &x}}, {});
      FAIL("write_file succeeded");
    } catch (const moas::Error &e) {
      CHECK(e.status() == MOAS_ERR_IO);
    }
    CHECK_FALSE(fs::exists(path + ".tmp"));
    CHECK(fs::is_directory(path));
  }

  SECTION("reading a missing file") {
    try {
      st::read_file(dir.file("nope.safetensors"));
      FAIL("read_file succeeded");
    } catch (const moas::Error &e) {
      CHECK(e.status() == MOAS_ERR_IO);
      CHECK(std::string(e.what()).find("nope.safetensors") != std::string::npos);
    }
  }

  SECTION("reading a directory") {
    try {
      st::read_file(dir.path.string());
      FAIL("read_file succeeded");
    } catch (const moas::Error &e) {
      CHECK(e.status() == MOAS_ERR_IO);
    }
  }

  SECTION("invalid tensors are refused before anything is written") {
    const std::string path = dir.file("bad.safetensors");
    const auto status_of = [&](const std::vector<st::TensorToWrite> &tensors) {
      try {
        st::write_file(path, tensors, {});
      } catch (const moas::Error &e) {
        return e.status();
      }
      return MOAS_OK;
    };
    CHECK(status_of({{"x", {1}, &x}, {"x", {1}, &x}}) == MOAS_ERR_INTERNAL);
    CHECK(status_of({{"x", {-1}, &x}}) == MOAS_ERR_INTERNAL);
    CHECK(status_of({{"x", {1}, nullptr}}) == MOAS_ERR_INTERNAL);
    CHECK(status_of({{"__metadata__", {1}, &x}}) == MOAS_ERR_INTERNAL);
    CHECK(fs::is_empty(dir.path));
  }
}
