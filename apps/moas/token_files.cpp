#include "token_files.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "errors.hpp"

namespace moas_cli {

namespace {

// llm.c's dev/data scripts write a header of 256 int32s: this magic, a version (1: uint16 ids) and the id count.
constexpr uint32_t kLlmcMagic = 20240520;
constexpr size_t kLlmcHeaderBytes = 256 * sizeof(int32_t);

std::string read_binary_file(const std::string &path, const std::string &hint) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  if (!in || !(bytes << in.rdbuf()) || in.bad()) throw RuntimeFailure("cannot read " + path + ": " + hint);
  return bytes.str();
}

uint32_t little_endian_u32(const std::string &bytes, size_t at) {
  uint32_t value = 0;
  for (int k = 3; k >= 0; k--) value = (value << 8) | (unsigned char)bytes[at + (size_t)k];
  return value;
}

}  // namespace

Vocabulary read_token_vocabulary(const std::string &dir, int vocab_size) {
  const std::string path = dir + "/meta.json";
  std::ifstream probe(path);
  if (!probe) {
    if (vocab_size == kAuto)
      throw RuntimeFailure("the token directory " + dir + " has no meta.json: pass --vocab-size N or write " + path +
                           " as {\"vocab_size\": N}");
    return Vocabulary::tokens(vocab_size, "", {});
  }
  const std::string malformed = path + " must be a JSON object {\"vocab_size\": N (1 to 65536), optional "
                                       "\"tokenizer\": NAME, optional \"decode\": [N strings]}";
  const nlohmann::json meta =
      nlohmann::json::parse(read_binary_file(path, malformed), nullptr, /*allow_exceptions=*/false);
  if (!meta.is_object() || !meta.contains("vocab_size") || !meta["vocab_size"].is_number_integer())
    throw RuntimeFailure(malformed);
  const long long recorded = meta["vocab_size"].get<long long>();
  if (recorded < 1 || recorded > 65536) throw RuntimeFailure(malformed);
  if (vocab_size != kAuto && vocab_size != recorded)
    throw UsageError("--vocab-size " + std::to_string(vocab_size) + " differs from " + path + "'s vocab_size " +
                     std::to_string(recorded) + ": drop the flag or fix meta.json");
  std::string tokenizer;
  if (meta.contains("tokenizer")) {
    if (!meta["tokenizer"].is_string()) throw RuntimeFailure(malformed);
    tokenizer = meta["tokenizer"].get<std::string>();
  }
  std::vector<std::string> texts;
  if (meta.contains("decode")) {
    if (!meta["decode"].is_array() || (long long)meta["decode"].size() != recorded) throw RuntimeFailure(malformed);
    for (const nlohmann::json &text : meta["decode"]) {
      if (!text.is_string()) throw RuntimeFailure(malformed);
      texts.push_back(text.get<std::string>());
    }
  }
  return Vocabulary::tokens((int)recorded, tokenizer, texts);
}

std::vector<int32_t> read_token_file(const std::string &path, int vocab_size) {
  const std::string bytes =
      read_binary_file(path, "a --data directory holds train.bin and val.bin (uint16 token ids)");
  size_t first = 0;
  if (bytes.size() >= 4 && little_endian_u32(bytes, 0) == kLlmcMagic) {
    // Raw uint16 ids could start with these bytes too (ids 3144, 309): a file that is not then a whole llm.c file
    // is refused rather than guessed at.
    const uint32_t version = bytes.size() >= 12 ? little_endian_u32(bytes, 4) : 0;
    const uint64_t count = bytes.size() >= 12 ? little_endian_u32(bytes, 8) : 0;
    if (version != 1)
      throw RuntimeFailure(path + " starts with llm.c's magic " + std::to_string(kLlmcMagic) + " but not its version 1 "
                           "header (uint16 ids): convert it to raw uint16 ids");
    if (bytes.size() != kLlmcHeaderBytes + 2 * count)
      throw RuntimeFailure(path + " has an llm.c header for " + std::to_string(count) + " tokens but " +
                           std::to_string(bytes.size()) + " bytes: it is truncated or not an llm.c token file");
    first = kLlmcHeaderBytes;
  }
  if ((bytes.size() - first) % 2 != 0)
    throw RuntimeFailure(path + " has an odd number of bytes (" + std::to_string(bytes.size()) +
                         "): a token file holds little-endian uint16 ids");
  std::vector<int32_t> ids;
  ids.reserve((bytes.size() - first) / 2);
  for (size_t at = first; at < bytes.size(); at += 2) {
    const int32_t id = (int32_t)((unsigned char)bytes[at] | (unsigned char)bytes[at + 1] << 8);
    if (id >= vocab_size)
      throw RuntimeFailure(path + " has token id " + std::to_string(id) + " at byte offset " + std::to_string(at) +
                           ", not below the vocabulary size " + std::to_string(vocab_size) +
                           ": fix --vocab-size or meta.json's vocab_size");
    ids.push_back(id);
  }
  return ids;
}

}  // namespace moas_cli
