#pragma once
// The state behind swiftlet::Tokenizer (private to src/tokenizer/).
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace swiftlet {

struct Tokenizer::Impl {
  std::string file;  // tokenizer.json path, for messages

  // Model and pipeline.
  tok::BpeModel model;
  std::vector<tok::NormalizationForm> normalizer;  // applied in order; empty: none
  tok::PreTokenizer pre_tokenizer;
  std::vector<int32_t> prefix_ids, suffix_ids;  // post-processor template around the sequence

  struct Truncation {
    size_t max_length = 0;
    bool left = false;  // direction: drop from the front
  };
  std::optional<Truncation> truncation;
  struct Padding {
    std::optional<size_t> fixed_length;  // strategy Fixed; nullopt: BatchLongest
    size_t multiple_of = 0;
    bool left = false;
    int32_t pad_id = 0;
  };
  std::optional<Padding> padding;

  // Added tokens, in file order; matchers for the raw and the normalised text.
  std::vector<tok::AddedToken> added;
  std::unordered_map<std::string, int32_t> added_ids;  // content -> id
  tok::AddedTokenMatcher raw_matcher, normalized_matcher;

  // Per id (model and added): what decode emits, and flags.
  tok::StringTable decode_bytes;
  std::vector<uint8_t> id_flags;
  static constexpr uint8_t kAdded = 1, kSpecial = 2;
  int64_t vocab_size = 0;

  // tokenizer_config.json
  std::string eos_token, bos_token, pad_token, chat_template;
  int64_t model_max_length = INT64_MAX;
  bool clean_up_tokenization_spaces = false;
  bool split_special_tokens = false;

  bool has_id(int32_t id) const { return id >= 0 && size_t(id) < id_flags.size() && decode_bytes.has(size_t(id)); }
  bool special(int32_t id) const {
    return id >= 0 && size_t(id) < id_flags.size() && (id_flags[size_t(id)] & kSpecial);
  }
  int32_t token_to_id(std::string_view token) const;

  // Encodes text between raw-matched added tokens: normalise, then normalised added tokens,
  // then pre-tokenize + BPE.
  void encode_section(std::string_view text, std::vector<int32_t>& ids) const;
};

// Parses tokenizer.json text into impl (model, pipeline, added tokens, decode table).
void parse_tokenizer_json(std::string_view text, Tokenizer::Impl& impl);
// Reads tokenizer_config.json fields into impl.
void parse_tokenizer_config(std::string_view text, const std::string& file, Tokenizer::Impl& impl);

// transformers' clean_up_tokenization.
std::string clean_up_tokenization(std::string text);

}  // namespace swiftlet
