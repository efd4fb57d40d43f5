#pragma once
// A conversation -> token ids and labels: rendered with the chat template into pieces with and
// without loss, tokenized, truncated to max_length.
//
// Tokenization: the rendered text is tokenized as one text (what inference and HF's
// apply_chat_template + tokenizer produce), and each token takes the loss flag of the text it
// covers (a token that covers any trained byte is trained). Tokenizing the pieces one by one, as
// ms-swift does, gives other ids where a token crosses a piece boundary: a reply that starts
// with a newline merges with the "\n" ending the assistant header ("\n\n" is one token), and
// Qwen3's untrained empty think block can end inside a run of spaces. When normalization (NFC)
// changes the text, byte offsets no longer line up: such rows are tokenized piece by piece
// instead (and counted).
#include <cstdint>
#include <string>
#include <vector>

#include "data/conversation.h"
#include "data/sample.h"
#include "template/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace swiftlet {

struct EncodeSettings {
  TemplateOptions options;  // system (--system), preserve_thinking; no generation prompt
  bool loss_all = false;    // --loss_scale all: every token is trained
  // --loss_scale last_round (rlhf's default): only the final reply (everything after the last
  // user message, merged into one) and its end-of-turn are trained.
  bool last_round = false;
  int64_t max_length = 2048;
  std::string truncation_strategy = "delete";  // delete | left | right | split
};

struct EncodedRow {
  std::vector<TokenizedSample> samples;  // none when dropped; several with truncation "split"
  int64_t length = 0;                    // tokens before truncation
  bool over_length = false;              // longer than max_length
  bool no_trained_token = false;         // dropped: nothing left to learn
  bool per_segment = false;              // tokenized piece by piece (see above)
};

// Token ids of `pieces` joined, with labels (the id where the piece carries loss, -100 where
// not). Returns false when the tokenizer's normalization changed the text so that tokens cannot
// be mapped back onto the pieces.
bool tokenize_joined(const Tokenizer& tokenizer, const std::vector<TemplateSegment>& pieces,
                     std::vector<int32_t>& ids, std::vector<int32_t>& labels);
// Each piece tokenized on its own, the results concatenated (ms-swift's way).
void tokenize_per_segment(const Tokenizer& tokenizer, const std::vector<TemplateSegment>& pieces,
                          std::vector<int32_t>& ids, std::vector<int32_t>& labels);

// The pieces of a training conversation: ms-swift's message merging, the row's own system prompt
// ("" removes the system turn), and --loss_scale all / last_round.
std::vector<TemplateSegment> training_segments(const ChatTemplate& chat_template,
                                               const Conversation& conversation,
                                               const EncodeSettings& settings);

// Renders, tokenizes, labels (labels[0] is always -100, as in ms-swift) and truncates one row.
// Template errors propagate (the caller names the row).
EncodedRow encode_conversation(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                               const Conversation& conversation, const EncodeSettings& settings);

}  // namespace swiftlet
