// Training text: the generated recall/copy task, a file or a directory of token files; its vocabulary, the 90/10
// split (or the separate validation data) and the batches.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "options.hpp"

namespace moas_cli {

// Character-level (the sorted unique code points of the text, as the reference does), the 256 byte values, or the
// ids of an outside tokenizer (token files): prompts are then whitespace-separated ids, and generated ids print as
// " ID" unless the vocabulary knows each id's text.
class Vocabulary {
 public:
  static Vocabulary bytes();
  static Vocabulary characters_of(const std::u32string &text);
  // Ids 0 to count - 1; tokenizer names them (may be empty); texts is empty or what each id decodes to.
  static Vocabulary tokens(int count, std::string tokenizer, std::vector<std::string> texts);
  // Reads what to_json wrote; throws RuntimeFailure on anything else.
  static Vocabulary from_json(const nlohmann::json &json);
  nlohmann::json to_json() const;

  bool is_bytes() const { return kind_ == Kind::Bytes; }
  bool is_tokens() const { return kind_ == Kind::Tokens; }
  const std::string &tokenizer() const { return tokenizer_; }
  int size() const;
  // Token ids of a UTF-8 string (of whitespace-separated ids for token vocabularies); throws UsageError naming the
  // first character or word outside the vocabulary.
  std::vector<int32_t> encode(const std::string &utf8) const;
  std::string decode(int32_t token) const;
  // The id of a character of a character vocabulary, or -1.
  int32_t id_of(char32_t c) const;

 private:
  enum class Kind { Characters, Bytes, Tokens };
  Kind kind_ = Kind::Characters;
  std::u32string characters_;  // sorted
  int token_count_ = 0;
  std::string tokenizer_;
  std::vector<std::string> token_texts_;  // empty, or one per id
};

// A run of tokens and which of them a prediction is scored on: the generated task scores only the answers a
// model can know (recalled values, copied words) so its loss measures recall and copying, not the random symbols
// around them; text files score every token (scored empty).
struct Split {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> scored;  // empty, or one flag per token
  size_t size() const { return tokens.size(); }
};

struct Corpus {
  Vocabulary vocabulary;
  Split train;  // the first 90% of the tokens, or all of --data when validation data comes separately
  Split val;    // the last 10%, --val-data, or a token directory's val.bin
  std::string source;          // what the text is, for people
  std::string fingerprint;     // hash of all the tokens and the vocabulary: a resumed run must see the same
};

// The generated task or --data (a text file, split 90/10 unless --val-data, or a token directory), tokenised;
// throws UsageError/RuntimeFailure when a split cannot hold a window of block + 1 tokens, or when --val-data has a
// character its training text lacks (naming it and its position).
Corpus load_corpus(const TrainOptions &options);

// The bytes of a file named by a flag (`flag` only words the messages); RuntimeFailure for a directory, an unreadable
// file and, unless allow_empty, an empty one.
std::string read_text_file(const std::string &flag, const std::string &path, bool allow_empty = false);

// Multi-query associative recall mixed with copying, one episode a line, e.g. "c4 x1 q7 m2 ? q7 c4 x1 | hpzw=hpzw":
// key/value bindings, then queries whose digit is the value bound to the key earlier in the line, then a word and
// its copy. Recall needs attention to look up one earlier position by content, for several queries at once: the
// kind of lookup that sharing key/value heads (GQA, MQA) makes harder. *answers flags each character that is a
// recalled value or a copied letter.
std::string generate_recall_copy_text(uint64_t seed, size_t min_chars, std::vector<uint8_t> *answers);

// tokens and targets [batch, block]: random windows of block + 1 tokens of split, lane b of draw (seed, stream,
// index); targets are -1 where the split does not score the token. The windows depend on nothing else, so a
// resumed run sees the batches a straight run would.
void fill_batch(const Split &split, int block, int batch, uint64_t seed, uint64_t stream, uint64_t index,
                int32_t *tokens, int32_t *targets);

// UTF-8 text as code points; false (with the offset of the first bad byte) when the text is not valid UTF-8.
bool decode_utf8(const std::string &text, std::u32string *code_points, size_t *bad_offset);
std::string encode_utf8(char32_t code_point);

}  // namespace moas_cli
