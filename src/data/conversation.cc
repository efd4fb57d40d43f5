#include "data/conversation.h"

#include <fmt/format.h>

#include <initializer_list>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace swiftlet {

namespace {

using json = nlohmann::json;

constexpr const char* kMediaHint =
    "swiftlet trains text-only models for now: remove images/audio/video from the dataset";
constexpr const char* kToolHint =
    "tool calling is not supported for training yet: remove tool definitions and tool turns";

bool is_media_part(const std::string& type) {
  return type == "image_url" || type == "image" || type == "video" || type == "video_url" ||
         type == "audio" || type == "audio_url" || type == "input_audio";
}

// A JSON value that holds nothing: null, "", [] or {}.
bool is_blank(const json& v) {
  return v.is_null() || ((v.is_string() || v.is_array() || v.is_object()) && v.empty());
}

std::string text_of(const json& v, const std::string& where, const std::string& field) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null())
    throw Error(fmt::format("{}: {} is null", where, field), "every text must be a string");
  if (v.is_array()) {  // OpenAI content parts: the text parts, in order
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
      const json& part = v[i];
      const std::string type = part.is_object() && part.contains("type") && part["type"].is_string()
                                   ? part["type"].get<std::string>()
                                   : "";
      if (is_media_part(type))
        throw Error(fmt::format("{}: {} part {} is of type '{}'", where, field, i, type),
                    kMediaHint);
      if (type != "text" || !part.contains("text") || !part["text"].is_string())
        throw Error(fmt::format("{}: {} part {} is not {{\"type\": \"text\", \"text\": \"...\"}}",
                                where, field, i),
                    "content is a string or a list of text parts");
      out += part["text"].get<std::string>();
    }
    return out;
  }
  throw Error(fmt::format("{}: {} must be a string, got {}", where, field, v.type_name()),
              "quote numbers and other values as JSON strings");
}

std::string normalise_role(const json& role, const std::string& where) {
  if (!role.is_string())
    throw Error(fmt::format("{}: role must be a string, got {}", where, role.type_name()));
  const std::string r = role.get<std::string>();
  if (r == "user" || r == "human") return "user";
  if (r == "assistant" || r == "gpt" || r == "bot" || r == "model") return "assistant";
  if (r == "system") return "system";
  if (r == "tool" || r == "tool_call" || r == "tool_response" || r == "function" ||
      r == "function_call" || r == "observation" || r == "ipython")
    throw Error(fmt::format("{}: role '{}' is a tool turn", where, r), kToolHint);
  throw Error(fmt::format("{}: unknown role '{}'", where, r),
              "roles are system, user (human) and assistant (gpt, bot)");
}

const json* first_of(const json& row, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (row.contains(k) && !row[k].is_null()) return &row[k];
  return nullptr;
}

void refuse_unsupported_columns(const json& row, const std::string& where) {
  for (const char* key : {"images", "image", "videos", "video", "audios", "audio", "objects"})
    if (row.contains(key) && !is_blank(row[key]))
      throw Error(fmt::format("{}: the row has {}", where, key), kMediaHint);
  if (row.contains("tools") && !is_blank(row["tools"]) &&
      !(row["tools"].is_string() && row["tools"].get<std::string>() == "[]"))
    throw Error(fmt::format("{}: the row has tools", where), kToolHint);
}

ChatMessage parse_message(const json& m, const std::string& at) {
  if (!m.is_object())
    throw Error(fmt::format("{}: expected a JSON object, got {}", at, m.type_name()));
  const json& role = m.contains("role") ? m["role"] : m["from"];
  const bool openai = m.contains("role");
  const char* content_key = openai ? "content" : "value";
  if (!m.contains(content_key)) throw Error(fmt::format("{}: {} is missing", at, content_key));
  ChatMessage msg{normalise_role(role, at), text_of(m[content_key], at, content_key), ""};
  if (m.contains("tool_calls") && !is_blank(m["tool_calls"]))
    throw Error(fmt::format("{}: the message has tool_calls", at), kToolHint);
  if (m.contains("loss") && !m["loss"].is_null()) {
    if (!m["loss"].is_boolean())
      throw Error(fmt::format("{}: loss must be true or false, got {}", at, m["loss"].type_name()));
    if (!m["loss"].get<bool>() || msg.role != "assistant")
      throw Error(fmt::format("{}: per-message \"loss\" is not supported", at),
                  "remove the key; every assistant reply is trained (--loss_scale default)");
  }
  if (m.contains("loss_scale") && !m["loss_scale"].is_null())
    throw Error(fmt::format("{}: per-message \"loss_scale\" is not supported", at),
                "remove the key; every assistant reply is trained with weight 1");
  if (m.contains("reasoning_content") && !m["reasoning_content"].is_null()) {
    if (msg.role != "assistant")
      throw Error(fmt::format("{}: only assistant messages carry reasoning_content", at));
    msg.reasoning_content = text_of(m["reasoning_content"], at, "reasoning_content");
  }
  return msg;
}

}  // namespace

json rename_columns(const json& row, const ParseOptions& options) {
  if (options.columns.empty() || !row.is_object()) return row;
  json out = json::object();
  for (auto it = row.begin(); it != row.end(); ++it) {
    auto c = options.columns.find(it.key());
    out[c == options.columns.end() ? it.key() : c->second] = it.value();
  }
  return out;
}

Conversation parse_conversation(const json& input_row, const std::string& where,
                                const ParseOptions& options) {
  if (!input_row.is_object())
    throw Error(fmt::format("{}: expected a JSON object, got {}", where, input_row.type_name()),
                "each row is one JSON object such as {\"messages\": [...]}");
  const json row = rename_columns(input_row, options);
  refuse_unsupported_columns(row, where);
  Conversation c;
  const json* system = first_of(row, {"system", "system_prompt"});

  if (const json* msgs = first_of(row, {"messages", "conversation", "conversations"})) {
    if (!msgs->is_array())
      throw Error(fmt::format("{}: messages must be a list, got {}", where, msgs->type_name()));
    for (size_t i = 0; i < msgs->size(); ++i) {
      const json& m = (*msgs)[i];
      const std::string at = fmt::format("{} message {}", where, i);
      if (m.is_object() && (m.contains("role") || m.contains("from"))) {  // OpenAI or ShareGPT
        c.messages.push_back(parse_message(m, at));
      } else if (m.is_object() && (m.contains("human") || m.contains("user"))) {
        // {"human": query, "assistant": reply}
        const json& q = m.contains("human") ? m["human"] : m["user"];
        c.messages.push_back({"user", text_of(q, at, "human"), ""});
        if (const json* a = first_of(m, {"assistant", "gpt"}))
          c.messages.push_back({"assistant", text_of(*a, at, "assistant"), ""});
      } else if (m.is_object()) {
        throw Error(fmt::format("{}: expected role/content (or from/value) keys", at),
                    "a message looks like {\"role\": \"user\", \"content\": \"...\"}");
      } else {
        throw Error(fmt::format("{}: expected a JSON object, got {}", at, m.type_name()));
      }
    }
    // A system column goes first unless the messages bring their own.
    if (system && (c.messages.empty() || c.messages[0].role != "system"))
      c.messages.insert(c.messages.begin(), {"system", text_of(*system, where, "system"), ""});
  } else {
    if (system) c.messages.push_back({"system", text_of(*system, where, "system"), ""});
    const json* text = first_of(row, {"text"});
    const json* query_key =
        first_of(row, {"query", "prompt", "input", "instruction", "question", "problem"});
    if (text && !query_key) {  // pre-training row: a single assistant message
      c.messages.push_back({"assistant", text_of(*text, where, "text"), ""});
    } else if (!query_key) {
      throw Error(fmt::format("{}: no conversation found", where),
                  "a row needs messages, conversations, instruction/output, query/response or "
                  "text");
    } else {
      std::string query;
      const json* instruction = first_of(row, {"instruction"});
      const json* input = first_of(row, {"input"});
      if (instruction && input) {  // Alpaca: instruction + "\n" + input when both non-empty
        const std::string a = text_of(*instruction, where, "instruction");
        const std::string b = text_of(*input, where, "input");
        query = a.empty() ? b : (b.empty() ? a : a + "\n" + b);
      } else {
        query = text_of(*query_key, where, "query");
      }
      if (const json* hist = first_of(row, {"history"})) {
        if (!hist->is_array())
          throw Error(fmt::format("{}: history must be a list of [query, response] pairs, got {}",
                                  where, hist->type_name()));
        for (size_t i = 0; i < hist->size(); ++i) {
          const json& pair = (*hist)[i];
          if (!pair.is_array() || pair.size() != 2)
            throw Error(
                fmt::format("{}: history item {} is not a [query, response] pair", where, i));
          c.messages.push_back({"user", text_of(pair[0], where, "history query"), ""});
          c.messages.push_back({"assistant", text_of(pair[1], where, "history response"), ""});
        }
      }
      c.messages.push_back({"user", query, ""});
      if (const json* r =
              first_of(row, {"response", "answer", "output", "targets", "target", "answer_key",
                             "answers", "solution", "text", "completion", "content"})) {
        if (r->is_array() && r->empty())
          throw Error(fmt::format("{}: the response is an empty list", where));
        const json& rv = r->is_array() ? (*r)[0] : *r;  // a list takes its first element
        c.messages.push_back({"assistant", text_of(rv, where, "response"), ""});
      }
    }
  }
  bool has_turn = false;
  for (const auto& m : c.messages) has_turn |= m.role != "system";
  if (!has_turn)
    throw Error(fmt::format("{}: the conversation is empty", where),
                "give at least one user or assistant message");
  return c;
}

std::vector<ChatMessage> merge_for_template(const std::vector<ChatMessage>& messages) {
  std::vector<ChatMessage> out;
  out.reserve(messages.size() + 1);
  for (const ChatMessage& m : messages) {
    if (!out.empty() && m.role != "system" && out.back().role == m.role) {
      out.back().content += m.content;
      out.back().reasoning_content += m.reasoning_content;
    } else {
      out.push_back(m);
    }
  }
  size_t first = 0;
  while (first < out.size() && out[first].role == "system") ++first;
  if (first < out.size() && out[first].role == "assistant")
    out.insert(out.begin() + long(first), ChatMessage{"user", "", ""});
  return out;
}

nlohmann::ordered_json conversation_to_json(const Conversation& conversation) {
  using ordered = nlohmann::ordered_json;
  ordered messages = ordered::array();
  for (const ChatMessage& m : conversation.messages) {
    ordered j = {{"role", m.role}, {"content", m.content}};
    if (!m.reasoning_content.empty()) j["reasoning_content"] = m.reasoning_content;
    messages.push_back(std::move(j));
  }
  ordered row = ordered::object();
  row["messages"] = std::move(messages);
  return row;
}

}  // namespace swiftlet
