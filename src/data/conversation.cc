#include "data/conversation.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <algorithm>

#include "core/error.h"

namespace swiftlet {

namespace {

using json = nlohmann::json;

std::string text_of(const json& v, const std::string& where, const std::string& field) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {  // OpenAI content parts: keep the text parts
    std::string out;
    for (const auto& part : v) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
        throw Error(fmt::format("{}: {} has a content part that is not {{\"type\": \"text\", \"text\": ...}}", where, field),
                    "only text content is supported");
      out += part["text"].get<std::string>();
    }
    return out;
  }
  throw Error(fmt::format("{}: {} must be a string, got {}", where, field, v.type_name()));
}

std::string normalise_role(const std::string& r, const std::string& where) {
  if (r == "user" || r == "human") return "user";
  if (r == "assistant" || r == "gpt" || r == "bot" || r == "model") return "assistant";
  if (r == "system") return "system";
  throw Error(fmt::format("{}: unknown role '{}'", where, r), "roles are system, user and assistant");
}

const json* first_of(const json& row, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (row.contains(k) && !row[k].is_null()) return &row[k];
  return nullptr;
}

}  // namespace

Conversation parse_conversation(const json& row, const std::string& where) {
  if (!row.is_object()) throw Error(fmt::format("{}: expected a JSON object, got {}", where, row.type_name()));
  Conversation c;
  const json* system = first_of(row, {"system", "system_prompt"});
  if (system) c.messages.push_back({"system", text_of(*system, where, "system"), ""});

  const json* msgs = first_of(row, {"messages", "conversation", "conversations"});
  if (msgs) {
    if (!msgs->is_array()) throw Error(fmt::format("{}: messages must be a list, got {}", where, msgs->type_name()));
    for (size_t i = 0; i < msgs->size(); ++i) {
      const json& m = (*msgs)[i];
      const std::string at = fmt::format("{} message {}", where, i);
      if (!m.is_object()) throw Error(fmt::format("{}: expected an object, got {}", at, m.type_name()));
      if (m.contains("role") || m.contains("from")) {  // OpenAI or ShareGPT
        const json& role = m.contains("role") ? m["role"] : m["from"];
        const json* content = m.contains("content") ? &m["content"] : (m.contains("value") ? &m["value"] : nullptr);
        if (!role.is_string()) throw Error(fmt::format("{}: role must be a string", at));
        if (!content || content->is_null()) throw Error(fmt::format("{}: content is missing", at));
        ChatMessage msg{normalise_role(role.get<std::string>(), at), text_of(*content, at, "content"), ""};
        if (m.contains("reasoning_content") && m["reasoning_content"].is_string())
          msg.reasoning_content = m["reasoning_content"].get<std::string>();
        c.messages.push_back(std::move(msg));
      } else if (m.contains("human") || m.contains("user")) {  // {"human": q, "assistant": a}
        const json& q = m.contains("human") ? m["human"] : m["user"];
        c.messages.push_back({"user", text_of(q, at, "human"), ""});
        if (const json* a = first_of(m, {"assistant", "gpt"})) c.messages.push_back({"assistant", text_of(*a, at, "assistant"), ""});
      } else {
        throw Error(fmt::format("{}: expected role/content or from/value keys", at));
      }
    }
  } else if (const json* text = first_of(row, {"text"}); text && !first_of(row, {"query", "prompt", "instruction", "input", "question", "problem"})) {
    // pre-training row: a single assistant message
    c.messages.push_back({"assistant", text_of(*text, where, "text"), ""});
  } else {
    std::string query;
    const json* instruction = first_of(row, {"instruction"});
    const json* input = first_of(row, {"input"});
    if (instruction && input) {  // Alpaca: instruction + "\n" + input when both non-empty
      std::string a = text_of(*instruction, where, "instruction"), b = text_of(*input, where, "input");
      query = a.empty() ? b : (b.empty() ? a : a + "\n" + b);
    } else if (const json* q = first_of(row, {"query", "prompt", "input", "instruction", "question", "problem"})) {
      query = text_of(*q, where, "query");
    } else {
      throw Error(fmt::format("{}: no conversation found", where),
                  "a row needs messages, conversations, instruction/output, query/response or text");
    }
    if (const json* hist = first_of(row, {"history"})) {
      if (!hist->is_array()) throw Error(fmt::format("{}: history must be a list of [query, response] pairs", where));
      for (const auto& pair : *hist) {
        if (!pair.is_array() || pair.size() != 2)
          throw Error(fmt::format("{}: history must be a list of [query, response] pairs", where));
        c.messages.push_back({"user", text_of(pair[0], where, "history"), ""});
        c.messages.push_back({"assistant", text_of(pair[1], where, "history"), ""});
      }
    }
    c.messages.push_back({"user", query, ""});
    if (const json* r = first_of(row, {"response", "answer", "output", "targets", "target", "answer_key",
                                        "answers", "solution", "text", "completion", "content"})) {
      const json& rv = (r->is_array() && !r->empty()) ? (*r)[0] : *r;  // a list takes its first element
      c.messages.push_back({"assistant", text_of(rv, where, "response"), ""});
    }
  }
  bool has_turn = false;
  for (const auto& m : c.messages) has_turn |= m.role != "system";
  if (!has_turn) throw Error(fmt::format("{}: the conversation is empty", where));
  return c;
}

std::vector<std::pair<size_t, json>> read_json_rows(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(fmt::format("cannot open dataset {}", path), "check the path");
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  std::vector<std::pair<size_t, json>> rows;
  size_t first = text.find_first_not_of(" \t\r\n");
  const bool is_json = std::filesystem::path(path).extension() == ".json";
  if (is_json && first != std::string::npos && text[first] == '[') {
    try {
      json arr = json::parse(text);
      size_t item = 0;
      for (auto& r : arr) rows.emplace_back(++item, std::move(r));
      return rows;
    } catch (const json::parse_error& e) {
      // report the line of the byte offset
      size_t line = 1 + size_t(std::count(text.begin(), text.begin() + std::min(text.size(), size_t(e.byte)), '\n'));
      throw Error(fmt::format("{} line {}: malformed JSON", path, line));
    }
  }
  std::istringstream lines(text);
  std::string line;
  size_t n = 0;
  while (std::getline(lines, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      rows.emplace_back(n, json::parse(line));
    } catch (const json::parse_error&) {
      throw Error(fmt::format("{} line {}: malformed JSON", path, n), "each line must be one JSON object");
    }
  }
  return rows;
}

}  // namespace swiftlet
