#pragma once
// Added tokens (tokenizer.json "added_tokens": special tokens such as <|im_start|>, and extra
// ones such as <think>) are found in the text before BPE, as Hugging Face's AddedVocabulary does:
// leftmost-longest matching, then the token's flags:
//   single_word  the match only counts when no word character touches it on either side
//   lstrip/rstrip the whitespace before/after the match is swallowed by the token
//   normalized   match against the normalised text (else against the raw text)
//   special      skipped by decode(skip_special_tokens) and by split_special_tokens
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/pre_tokenizer.h"

namespace swiftlet::tok {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

class AddedTokenMatcher {
 public:
  // patterns: (text to look for, index of the token in `tokens`).
  void build(const std::vector<std::pair<std::string, int32_t>>& patterns);
  bool empty() const { return nodes_.size() <= 1; }

  // Cuts text into the spans between tokens (on_text, non-empty) and tokens (on_token(index)).
  // When skip_special is set, special tokens are matched but left in the text (HF's
  // split_special_tokens / encode_special_tokens).
  void split(std::string_view text, const std::vector<AddedToken>& tokens, bool skip_special,
             FunctionRef<void(std::string_view)> on_text, FunctionRef<void(int32_t)> on_token) const;

 private:
  struct Node {
    int32_t value = -1;  // token index when a pattern ends here
    std::vector<std::pair<unsigned char, int32_t>> children;
  };
  int32_t child(int32_t node, unsigned char b) const;
  std::vector<Node> nodes_;
  bool first_byte_[256] = {};
};

}  // namespace swiftlet::tok
