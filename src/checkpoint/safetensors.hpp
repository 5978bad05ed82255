// A strict safetensors reader and an F32 writer (SPEC §8). The reader validates as strictly as the reference
// implementation, so a damaged checkpoint is reported precisely instead of loading garbage; every failure is a
// moas::Error whose status says what kind of damage it is and whose message names the file and the tensor or
// byte offset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moas::safetensors {

// A view into File::bytes: it stays valid as long as the File it came from (and is not moved out of it).
struct Tensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", ... as written in the file
  std::vector<int64_t> shape;
  const uint8_t *data = nullptr;
  size_t nbytes = 0;
  uint64_t numel() const;
};

struct File {
  std::vector<uint8_t> bytes;                   // the whole file
  std::map<std::string, std::string> metadata;  // "__metadata__" (string values only)
  std::vector<Tensor> tensors;                  // sorted by data offset
  const Tensor *find(const std::string &name) const;  // nullptr if absent
};

// Validates `bytes` as a safetensors file. `origin` (a path) is only used in messages.
// Statuses: MOAS_ERR_CHECKPOINT_TRUNCATED, _HEADER, _DTYPE, _LAYOUT.
File parse(std::vector<uint8_t> bytes, const std::string &origin);

// Reads and parses a file; MOAS_ERR_IO if it cannot be opened or read.
File read_file(const std::string &path);

// Converts F32, F16 or BF16 data (little-endian) to float. Other dtypes: MOAS_ERR_CHECKPOINT_DTYPE.
std::vector<float> to_f32(const Tensor &t);

struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  const float *data;  // numel floats; may be null only when numel is 0
};

// Writes F32 tensors in the given order, with metadata, to `path + ".tmp"`, then renames it onto `path`, so a
// reader never sees a half-written checkpoint. MOAS_ERR_IO on any I/O failure (the temporary is removed);
// MOAS_ERR_INTERNAL for arguments only a caller bug produces (duplicate or reserved names, negative dims,
// null data). The JSON header is padded with spaces to a multiple of 8 bytes so the data section is aligned.
void write_file(const std::string &path, const std::vector<TensorToWrite> &tensors,
                const std::map<std::string, std::string> &metadata);

}  // namespace moas::safetensors
