#pragma once
// One dataset row -> a conversation, for every format ms-swift accepts: `messages` (OpenAI
// roles), `conversation(s)` (ShareGPT from/value, or human/assistant pairs), Alpaca
// instruction/input/output, query/response/history/system (with ms-swift's column aliases), and
// plain `text` (pre-training). Rows that cannot be read are an Error naming `where` (file:line).
#include <nlohmann/json_fwd.hpp>

#include <string>
#include <utility>
#include <vector>

#include "template/chat_template.h"

namespace swiftlet {

struct Conversation {
  std::vector<ChatMessage> messages;  // system (optional) first, then user/assistant turns
};

Conversation parse_conversation(const nlohmann::json& row, const std::string& where);

// Reads a .jsonl / .json (array or lines) file into (line number, row) pairs (for a JSON array:
// the item number); malformed JSON is an Error naming the file and line.
std::vector<std::pair<size_t, nlohmann::json>> read_json_rows(const std::string& path);

}  // namespace swiftlet
