// A strict safetensors reader and an F32 writer (SPEC §8). The reader validates as strictly as the reference
// implementation, so a damaged checkpoint is reported precisely instead of loading garbage; every failure is a
// moas::Error whose status says what kind of damage it is and whose message names the file and the tensor or
// byte offset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace moas::safetensors {

// Text from a file as a message may show it: bytes outside printable ASCII as \xNN, at most 120 of them, so a message
// never carries raw bytes or a megabyte-long name.
std::string printable(const std::string &text);

// One tensor's entry in the header: where its bytes lie, not the bytes (File::read fetches them).
struct Tensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", ... as written in the file
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // of its first byte, from the start of the file
  size_t nbytes = 0;
  uint64_t numel() const;
};

// A validated header. Tensor data stays where it is (in the file, or in the buffer given to parse) until read, so a
// file whose header promises gigabytes costs no more than its header until its tensors are wanted.
class File {
 public:
  std::map<std::string, std::string> metadata;  // "__metadata__" (string values only)
  std::vector<Tensor> tensors;                  // sorted by data offset
  const Tensor *find(const std::string &name) const;  // nullptr if absent

  // The tensor's bytes. MOAS_ERR_IO if the file cannot be read, _TRUNCATED if it shrank since it was opened.
  std::vector<uint8_t> read(const Tensor &t) const;

 private:
  friend File parse(std::vector<uint8_t> bytes, const std::string &origin);
  friend File read_file(const std::string &path);
  std::string origin_;
  std::vector<uint8_t> bytes_;          // parse(): the whole file
  std::shared_ptr<std::FILE> handle_;   // read_file(): the open file
};

// Validates `bytes` as a safetensors file. `origin` (a path) is only used in messages.
// Statuses: MOAS_ERR_CHECKPOINT_TRUNCATED, _HEADER, _DTYPE, _LAYOUT.
File parse(std::vector<uint8_t> bytes, const std::string &origin);

// Opens a regular file and validates its header and layout against its size, reading only the 8-byte length and
// the header (the length is bounded before the header is read). MOAS_ERR_IO if it cannot be opened or read or is not
// a regular file; otherwise the statuses of parse.
File read_file(const std::string &path);

// Reads a F32, F16 or BF16 tensor (little-endian) as float. Other dtypes: MOAS_ERR_CHECKPOINT_DTYPE.
std::vector<float> to_f32(const File &file, const Tensor &t);

struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  const float *data;  // numel floats; may be null only when numel is 0
};

// Writes F32 tensors in the given order, with metadata, to `path + ".tmp"`, then renames it onto `path`, so a
// reader never sees a half-written checkpoint. MOAS_ERR_IO on any I/O failure (the temporary is removed);
// MOAS_ERR_INVALID_ARGUMENT for metadata that is not UTF-8; MOAS_ERR_INTERNAL for arguments only a bug in libmoas
// produces (duplicate or reserved names, negative dims, null data). The JSON header is padded with spaces to a multiple of 8 bytes so the data section is aligned.
void write_file(const std::string &path, const std::vector<TensorToWrite> &tensors,
                const std::map<std::string, std::string> &metadata);

}  // namespace moas::safetensors
