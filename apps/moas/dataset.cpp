#include "dataset.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <utility>

#include "counter_rng.hpp"
#include "decimal.hpp"
#include "errors.hpp"
#include "token_files.hpp"

namespace moas_cli {

std::string read_text_file(const std::string &flag, const std::string &path, bool allow_empty) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw RuntimeFailure(flag + " " + path + " is a directory: pass a text file");
  std::FILE *file = std::fopen(path.c_str(), "rb");
  if (!file) throw RuntimeFailure("cannot read " + flag + " " + path + ": " + std::strerror(errno));
  std::string text;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) text.append(buffer, n);
  const bool failed = std::ferror(file);
  std::fclose(file);
  if (failed) throw RuntimeFailure("cannot read " + flag + " " + path + ": " + std::strerror(errno));
  if (text.empty() && !allow_empty) throw RuntimeFailure(flag + " " + path + " is empty: pass a file with some text");
  return text;
}

namespace {

// 'a' (U+0061), or only the code for a control character.
std::string describe_character(char32_t c) {
  char code[16];
  std::snprintf(code, sizeof code, "U+%04X", (unsigned)c);
  return c >= 0x20 && c != 0x7F ? "'" + encode_utf8(c) + "' (" + code + ")" : code;
}

std::u32string code_points_of(const std::string &flag, const std::string &path, const std::string &text) {
  std::u32string code_points;
  size_t bad;
  if (!decode_utf8(text, &code_points, &bad))
    throw RuntimeFailure(flag + " " + path + " is not valid UTF-8 (byte " + std::to_string(bad) +
                         "): pass --bytes to train on its bytes");
  return code_points;
}

// The validation text in the training text's vocabulary: a character the training text lacks has no id.
std::vector<int32_t> validation_tokens(const TrainOptions &options, const Vocabulary &vocabulary) {
  const std::string text = read_text_file("--val-data", options.val_data);
  if (vocabulary.is_bytes()) return vocabulary.encode(text);
  const std::u32string code_points = code_points_of("--val-data", options.val_data, text);
  std::vector<int32_t> tokens;
  tokens.reserve(code_points.size());
  size_t line = 1, column = 1;
  for (size_t i = 0; i < code_points.size(); i++) {
    const int32_t id = vocabulary.id_of(code_points[i]);
    if (id < 0)
      throw RuntimeFailure("--val-data " + options.val_data + " has the character " +
                           describe_character(code_points[i]) + " at character " + std::to_string(i) + " (line " +
                           std::to_string(line) + ", column " + std::to_string(column) + ") that --data " +
                           options.data + " lacks: validation text must use only the training text's characters");
    tokens.push_back(id);
    column = code_points[i] == U'\n' ? 1 : column + 1;
    line += code_points[i] == U'\n';
  }
  return tokens;
}

// FNV-1a, 64 bits: enough to notice that a resumed run was pointed at different text.
uint64_t fnv1a(uint64_t hash, const void *bytes, size_t n) {
  const unsigned char *p = static_cast<const unsigned char *>(bytes);
  for (size_t i = 0; i < n; i++) hash = (hash ^ p[i]) * 0x100000001B3ull;
  return hash;
}

}  // namespace

bool decode_utf8(const std::string &text, std::u32string *code_points, size_t *bad_offset) {
  code_points->clear();
  code_points->reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char lead = (unsigned char)text[i];
    int extra;
    char32_t cp;
    if (lead < 0x80) extra = 0, cp = lead;
    else if ((lead & 0xE0) == 0xC0) extra = 1, cp = lead & 0x1F;
    else if ((lead & 0xF0) == 0xE0) extra = 2, cp = lead & 0x0F;
    else if ((lead & 0xF8) == 0xF0) extra = 3, cp = lead & 0x07;
    else break;
    if (i + (size_t)extra >= text.size()) break;
    bool ok = true;
    for (int k = 1; k <= extra; k++) {
      const unsigned char next = (unsigned char)text[i + k];
      ok = ok && (next & 0xC0) == 0x80;
      cp = (cp << 6) | (next & 0x3F);
    }
    static const char32_t kSmallest[] = {0, 0x80, 0x800, 0x10000};
    if (!ok || cp < kSmallest[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) break;
    code_points->push_back(cp);
    i += 1 + (size_t)extra;
  }
  if (i == text.size()) return true;
  *bad_offset = i;
  return false;
}

std::string encode_utf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += (char)cp;
  } else if (cp < 0x800) {
    out += (char)(0xC0 | (cp >> 6));
    out += (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += (char)(0xE0 | (cp >> 12));
    out += (char)(0x80 | ((cp >> 6) & 0x3F));
    out += (char)(0x80 | (cp & 0x3F));
  } else {
    out += (char)(0xF0 | (cp >> 18));
    out += (char)(0x80 | ((cp >> 12) & 0x3F));
    out += (char)(0x80 | ((cp >> 6) & 0x3F));
    out += (char)(0x80 | (cp & 0x3F));
  }
  return out;
}

Vocabulary Vocabulary::bytes() {
  Vocabulary v;
  v.kind_ = Kind::Bytes;
  return v;
}

Vocabulary Vocabulary::tokens(int count, std::string tokenizer, std::vector<std::string> texts) {
  Vocabulary v;
  v.kind_ = Kind::Tokens;
  v.token_count_ = count;
  v.tokenizer_ = std::move(tokenizer);
  v.token_texts_ = std::move(texts);
  return v;
}

int Vocabulary::size() const {
  switch (kind_) {
    case Kind::Bytes: return 256;
    case Kind::Tokens: return token_count_;
    case Kind::Characters: break;
  }
  return (int)characters_.size();
}

Vocabulary Vocabulary::characters_of(const std::u32string &text) {
  Vocabulary v;
  v.characters_ = text;
  std::sort(v.characters_.begin(), v.characters_.end());
  v.characters_.erase(std::unique(v.characters_.begin(), v.characters_.end()), v.characters_.end());
  return v;
}

Vocabulary Vocabulary::from_json(const nlohmann::json &json) {
  const char *damaged = "the checkpoint's vocabulary metadata is damaged: retrain with moas train";
  if (!json.is_object() || !json.contains("kind") || !json["kind"].is_string()) throw RuntimeFailure(damaged);
  if (json["kind"] == "bytes") return bytes();
  if (json["kind"] == "tokens") {
    const nlohmann::json count = json.value("vocab_size", nlohmann::json());
    const nlohmann::json tokenizer = json.value("tokenizer", nlohmann::json(""));
    const nlohmann::json texts = json.value("decode", nlohmann::json::array());
    const bool count_ok = count.is_number_integer() && count >= 1 && count <= 65536;
    if (!count_ok || !tokenizer.is_string() || !texts.is_array() || (!texts.empty() && texts.size() != count))
      throw RuntimeFailure(damaged);
    std::vector<std::string> decoded;
    for (const nlohmann::json &text : texts) {
      if (!text.is_string()) throw RuntimeFailure(damaged);
      decoded.push_back(text.get<std::string>());
    }
    return tokens(count.get<int>(), tokenizer.get<std::string>(), decoded);
  }
  if (json["kind"] != "characters" || !json.contains("characters") || !json["characters"].is_string())
    throw RuntimeFailure(damaged);
  std::u32string characters;
  size_t bad;
  if (!decode_utf8(json["characters"].get<std::string>(), &characters, &bad)) throw RuntimeFailure(damaged);
  Vocabulary v = characters_of(characters);
  if (v.characters_.size() != characters.size()) throw RuntimeFailure(damaged);
  return v;
}

nlohmann::json Vocabulary::to_json() const {
  if (kind_ == Kind::Bytes) return {{"kind", "bytes"}};
  if (kind_ == Kind::Tokens) {
    nlohmann::json json = {{"kind", "tokens"}, {"vocab_size", token_count_}};
    if (!tokenizer_.empty()) json["tokenizer"] = tokenizer_;
    if (!token_texts_.empty()) json["decode"] = token_texts_;
    return json;
  }
  std::string utf8;
  for (char32_t c : characters_) utf8 += encode_utf8(c);
  return {{"kind", "characters"}, {"characters", utf8}};
}

std::vector<int32_t> Vocabulary::encode(const std::string &utf8) const {
  std::vector<int32_t> ids;
  if (kind_ == Kind::Bytes) {
    for (char c : utf8) ids.push_back((unsigned char)c);
    return ids;
  }
  if (kind_ == Kind::Tokens) {
    // No tokenizer here to turn text into ids: a prompt is the ids themselves.
    const char *space = " \t\n\r\v\f";
    for (size_t start = utf8.find_first_not_of(space); start != std::string::npos;
         start = utf8.find_first_not_of(space, start)) {
      const size_t end = std::min(utf8.find_first_of(space, start), utf8.size());
      const std::string word = utf8.substr(start, end - start);
      const std::optional<int> id = parse_decimal<int>(word);
      if (!id || *id < 0 || *id >= token_count_)
        throw UsageError("'" + word + "' (byte " + std::to_string(start) + ") is not a token id: this model reads "
                         "token ids from 0 to " + std::to_string(token_count_ - 1) + ", separated by spaces");
      ids.push_back(*id);
      start = end;
    }
    return ids;
  }
  std::u32string code_points;
  size_t bad;
  if (!decode_utf8(utf8, &code_points, &bad))
    throw UsageError("the text is not valid UTF-8 at byte " + std::to_string(bad));
  for (char32_t c : code_points) {
    const int32_t id = id_of(c);
    if (id < 0)
      throw UsageError("the character " + describe_character(c) +
                       " is not in the model's vocabulary: use only characters of its training text");
    ids.push_back(id);
  }
  return ids;
}

int32_t Vocabulary::id_of(char32_t c) const {
  const auto it = std::lower_bound(characters_.begin(), characters_.end(), c);
  return it == characters_.end() || *it != c ? -1 : (int32_t)(it - characters_.begin());
}

std::string Vocabulary::decode(int32_t token) const {
  if (kind_ == Kind::Bytes) return std::string(1, (char)(unsigned char)token);
  if (kind_ == Kind::Tokens)
    return token_texts_.empty() ? " " + std::to_string(token) : token_texts_[(size_t)token];
  return encode_utf8(characters_[(size_t)token]);
}

std::string generate_recall_copy_text(uint64_t seed, size_t min_chars, std::vector<uint8_t> *answers) {
  std::string text;
  text.reserve(min_chars + 64);
  answers->clear();
  uint64_t counter = 0;
  auto draw = [&](uint64_t n) { return (int)(counter_random(seed, kStreamTask, counter++, 0) % n); };
  auto emit = [&](const std::string &part, bool answer) {
    text += part;
    answers->insert(answers->end(), part.size(), answer ? 1 : 0);
  };
  while (text.size() < min_chars) {
    const int n_pairs = 4 + draw(3);
    std::string keys, values;
    while ((int)keys.size() < n_pairs) {
      const char key = (char)('a' + draw(26));
      if (keys.find(key) == std::string::npos) keys += key;
    }
    for (int i = 0; i < n_pairs; i++) {
      values += (char)('0' + draw(10));
      emit({keys[i], values[i], ' '}, false);
    }
    emit("? ", false);
    for (int q = 0; q < 3; q++) {
      const int i = draw(n_pairs);
      emit({keys[i]}, false);
      emit({values[i]}, true);
      emit(" ", false);
    }
    std::string word;
    for (int length = 4 + draw(3); length > 0; length--) word += (char)('a' + draw(26));
    emit("| " + word + "=", false);
    emit(word, true);
    emit("\n", false);
  }
  return text;
}

Corpus load_corpus(const TrainOptions &options) {
  // Each split must hold one window of block + 1 tokens; a 90/10 split, ceil(n / 10) >= block + 1.
  const size_t window = (size_t)options.block + 1;
  const size_t needed = 10 * (size_t)options.block + 1;
  std::error_code ec;
  const bool token_directory = !options.data.empty() && std::filesystem::is_directory(options.data, ec);
  if (options.vocab_size != kAuto && !token_directory)
    throw UsageError("--vocab-size applies only to a --data directory of token files (train.bin, val.bin)");
  if (!options.val_data.empty() && (options.data.empty() || token_directory))
    throw UsageError(options.data.empty() ? "--val-data needs --data: the generated task validates on its last tenth"
                                          : "--val-data does not apply to a token directory: its val.bin validates");
  if (options.bytes && token_directory)
    throw UsageError("--bytes does not apply to the token directory --data " + options.data + ": its ids are tokens");
  Corpus corpus;
  std::vector<int32_t> tokens;
  std::vector<uint8_t> scored;  // the generated text is ASCII: one flag per character is one per token
  const char *unit = "characters";
  if (token_directory) {
    corpus.vocabulary = read_token_vocabulary(options.data, options.vocab_size);
    tokens = read_token_file(options.data + "/train.bin", corpus.vocabulary.size());
    corpus.val.tokens = read_token_file(options.data + "/val.bin", corpus.vocabulary.size());
    const std::string &tokenizer = corpus.vocabulary.tokenizer();
    corpus.source = options.data + " (" + (tokenizer.empty() ? "" : tokenizer + " ") + "tokens, vocabulary " +
                    std::to_string(corpus.vocabulary.size()) + ")";
    unit = "tokens";
  } else {
    std::string text;
    if (options.data.empty()) {
      text = generate_recall_copy_text(options.seed, std::max<size_t>(1 << 19, needed), &scored);
      corpus.source = "generated recall/copy task (seed " + std::to_string(options.seed) + ")";
    } else {
      text = read_text_file("--data", options.data);
      corpus.source = options.data;
    }
    if (options.bytes) {
      corpus.vocabulary = Vocabulary::bytes();
      tokens = corpus.vocabulary.encode(text);
      unit = "bytes";
    } else {
      const std::u32string code_points = code_points_of("--data", options.data, text);
      corpus.vocabulary = Vocabulary::characters_of(code_points);
      tokens.reserve(code_points.size());
      for (char32_t c : code_points) tokens.push_back(corpus.vocabulary.id_of(c));
    }
    if (!options.val_data.empty()) {
      corpus.val.tokens = validation_tokens(options, corpus.vocabulary);
      corpus.source += " (validation: " + options.val_data + ")";
    }
  }
  const bool separate_val = token_directory || !options.val_data.empty();
  if (separate_val) {
    const std::string val_source = token_directory ? options.data + "/val.bin" : "--val-data " + options.val_data;
    const std::string train_source = token_directory ? options.data + "/train.bin" : "--data " + options.data;
    const std::pair<std::string, size_t> splits[] = {{train_source, tokens.size()}, {val_source, corpus.val.size()}};
    for (const auto &[source, size] : splits)
      if (size < window)
        throw RuntimeFailure(source + " has " + std::to_string(size) + " " + unit + ": --block " +
                             std::to_string(options.block) + " needs at least " + std::to_string(window) +
                             "; use a longer text or a smaller --block");
    corpus.train.tokens = std::move(tokens);
  } else {
    if (tokens.size() < needed)
      throw RuntimeFailure("--data " + options.data + " has " + std::to_string(tokens.size()) + " " + unit +
                           ": --block " + std::to_string(options.block) + " needs at least " +
                           std::to_string(needed) + " (its last tenth validates); use a longer text or a smaller "
                           "--block");
    const size_t n_train = tokens.size() * 9 / 10;
    corpus.train.tokens.assign(tokens.begin(), tokens.begin() + (long)n_train);
    corpus.val.tokens.assign(tokens.begin() + (long)n_train, tokens.end());
    if (!scored.empty()) {
      corpus.train.scored.assign(scored.begin(), scored.begin() + (long)n_train);
      corpus.val.scored.assign(scored.begin() + (long)n_train, scored.end());
    }
  }

  // Train then validation tokens: for a 90/10 split that is the text's tokens, hashed as before --val-data existed,
  // so older checkpoints still resume. Separate validation data adds the boundary between the two.
  const std::string vocabulary = corpus.vocabulary.to_json().dump();
  uint64_t hash = fnv1a(0xCBF29CE484222325ull, vocabulary.data(), vocabulary.size());
  hash = fnv1a(hash, corpus.train.tokens.data(), corpus.train.size() * sizeof(int32_t));
  hash = fnv1a(hash, corpus.val.tokens.data(), corpus.val.size() * sizeof(int32_t));
  hash = fnv1a(hash, scored.data(), scored.size());
  if (separate_val) {
    const uint64_t n_train = corpus.train.size();
    hash = fnv1a(hash, &n_train, sizeof n_train);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)hash);
  corpus.fingerprint = hex;
  return corpus;
}

void fill_batch(const Split &split, int block, int batch, uint64_t seed, uint64_t stream, uint64_t index,
                int32_t *tokens, int32_t *targets) {
  const uint64_t n_starts = split.size() - (size_t)block;  // windows [start, start + block] fit
  for (int b = 0; b < batch; b++) {
    const size_t start = (size_t)(counter_random(seed, stream, index, (uint64_t)b) % n_starts);
    const int32_t *window = split.tokens.data() + start;
    std::copy(window, window + block, tokens + (size_t)b * block);
    for (int t = 0; t < block; t++) {
      const bool scored = split.scored.empty() || split.scored[start + (size_t)t + 1];
      targets[(size_t)b * block + (size_t)t] = scored ? window[t + 1] : -1;
    }
  }
}

}  // namespace moas_cli
