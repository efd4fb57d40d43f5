#pragma once
// swiftlet::Tokenizer: a Hugging Face tokenizer.json (byte-level BPE: Qwen2/Qwen3, Llama-3,
// GPT-2 style) run the way the tokenizers library runs it:
//   added/special tokens found in the raw text -> normalizer (NFC, ...) on the rest -> added tokens
//   marked "normalized" -> pre-tokenizer (Split regexes, ByteLevel) -> BPE per piece ->
//   truncation -> post-processor (TemplateProcessing adds e.g. a BOS) -> padding.
// decode() maps ids back through the ByteLevel decoder; invalid UTF-8 becomes U+FFFD.
// A Tokenizer is cheap to copy (shared, immutable) and safe to use from several threads.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace swiftlet {

class Tokenizer {
 public:
  // `path` is a model folder (tokenizer.json, plus tokenizer_config.json and chat_template.jinja
  // when present) or a tokenizer.json file. Throws Error naming the file and the part it cannot
  // read or does not support.
  static Tokenizer load(const std::string& path);

  // Token ids of UTF-8 text; added and special tokens written in the text are recognised (unless
  // tokenizer_config.json sets split_special_tokens). add_special_tokens runs the
  // post-processor's template (for example a BOS token in front). Throws Error on invalid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;

  // Text of ids. Ids outside the vocabulary are skipped (as HF does). clean_up_tokenization_spaces
  // applies transformers' clean-up (" ." -> ".", " 's" -> "'s", ...); the value the model's
  // tokenizer_config.json asks for is clean_up_tokenization_spaces().
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false,
                     bool clean_up_tokenization_spaces = false) const;

  int32_t token_to_id(std::string_view token) const;  // -1 when unknown
  std::string id_to_token(int32_t id) const;          // "" when unknown; byte-level spelling
  int64_t vocab_size() const;                         // distinct tokens, added ones included
  bool is_special(int32_t id) const;                  // special added token (skipped by decode)
  std::vector<int32_t> special_ids() const;

  // tokenizer_config.json fields ("" / -1 when absent).
  const std::string& eos_token() const;
  const std::string& bos_token() const;
  const std::string& pad_token() const;
  int32_t eos_token_id() const;
  int32_t bos_token_id() const;
  int32_t pad_token_id() const;
  const std::string& chat_template() const;
  // INT64_MAX when the config has none or transformers' "no limit" value (1e30).
  int64_t model_max_length() const;
  bool clean_up_tokenization_spaces() const;
  bool split_special_tokens() const;

  struct Impl;

 private:
  friend class IncrementalDecoder;
  std::shared_ptr<const Impl> impl_;
};

// Streaming decode: feed ids as they are generated and get back the text they complete. A UTF-8
// character split across tokens is held until its last byte arrives, so the concatenation of all
// feed() results and flush() equals decode() of all ids.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);
  std::string feed(int32_t id);
  // Returns what is still held (an incomplete character becomes U+FFFD) and resets.
  std::string flush();

 private:
  std::shared_ptr<const Tokenizer::Impl> impl_;
  bool skip_special_tokens_;
  std::string pending_;
};

}  // namespace swiftlet
