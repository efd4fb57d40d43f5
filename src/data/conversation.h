#pragma once
// One dataset row -> a conversation, for every text format ms-swift accepts: `messages` (OpenAI
// roles, text content parts), `conversation(s)` (ShareGPT from/value, or human/assistant pairs),
// Alpaca instruction/input/output, query/response/history/system (with ms-swift's column
// aliases), and plain `text` (pre-training). Rows that cannot be read, and features swiftlet does
// not train yet (images, audio, video, tools, per-message loss), are an Error naming `where`
// (file:line).
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

#include "template/chat_template.h"

namespace swiftlet {

struct Conversation {
  std::vector<ChatMessage> messages;  // system (optional) first, then user/assistant turns
};

struct ParseOptions {
  // ms-swift --columns: renames row keys before the format is detected ({"q": "query"}).
  std::map<std::string, std::string> columns;
};

// The row with its keys renamed by options.columns (a row that is not an object is returned as
// it is). parse_conversation does this itself.
nlohmann::json rename_columns(const nlohmann::json& row, const ParseOptions& options);

Conversation parse_conversation(const nlohmann::json& row, const std::string& where,
                                const ParseOptions& options = {});

// What ms-swift does to messages before the template sees them: consecutive user or assistant
// messages are joined (texts concatenated), and a conversation whose first turn is the
// assistant's (a pre-training row) gets an empty user turn in front.
std::vector<ChatMessage> merge_for_template(const std::vector<ChatMessage>& messages);

// The conversation in ms-swift's standard row format: {"messages": [{"role", "content"}, ...]}
// (plus "reasoning_content" where given), keys in that order. Used for val_dataset.jsonl.
nlohmann::ordered_json conversation_to_json(const Conversation& conversation);

// Reads a .jsonl / .json (array or lines) file into (line number, row) pairs (for a JSON array:
// the item number); malformed JSON is an Error naming the file and line.
std::vector<std::pair<size_t, nlohmann::json>> read_json_rows(const std::string& path);

}  // namespace swiftlet
