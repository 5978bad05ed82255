// Token files in nanoGPT's format: a --data directory holding train.bin and val.bin, the raw little-endian uint16
// token ids its prepare.py scripts write (llm.c's files, the same ids after a 1024-byte header, are read too), and
// meta.json, which says how many ids there are and, optionally, what each one reads as.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dataset.hpp"

namespace moas_cli {

// The vocabulary of the token directory dir: vocab_size ids (kAuto: DIR/meta.json's "vocab_size"), named and
// decoded by meta.json's optional "tokenizer" and "decode". Throws RuntimeFailure for a missing or malformed
// meta.json and UsageError for a vocab_size that meta.json contradicts.
Vocabulary read_token_vocabulary(const std::string &dir, int vocab_size);

// The ids of a token file; throws RuntimeFailure naming the byte offset of the first id not below vocab_size.
std::vector<int32_t> read_token_file(const std::string &path, int vocab_size);

}  // namespace moas_cli
