#include "serve/openai_api.h"

#include <fmt/format.h>

#include <cmath>
#include <random>
#include <set>

namespace swiftlet::serve {

namespace {

constexpr int kMaxChoices = 64;  // n and the number of prompts, each
constexpr size_t kMaxStops = 16;

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, message, "invalid_request_error", "invalid_value", param);
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    default:
      return "a number";
  }
}

[[noreturn]] void wrong_type(const std::string& param, const json& v, const char* expected) {
  throw ApiError(400, fmt::format("'{}' must be {}, not {}", param, expected, type_name(v)),
                 "invalid_request_error", "invalid_type", param);
}

// A JSON object's fields read once each; fields left over at the end are unknown arguments.
class Fields {
 public:
  explicit Fields(const json& obj) : obj_(obj) {}

  // The value of a field, or nullptr when it is absent or null (OpenAI: null means "unset").
  const json* get(const std::string& key) {
    seen_.insert(key);
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  std::optional<double> number(const std::string& key, double lo, double hi, bool lo_open = false) {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) wrong_type(key, *v, "a number");
    const double x = v->get<double>();
    if (!std::isfinite(x) || x < lo || x > hi || (lo_open && x == lo))
      bad(key,
          fmt::format("'{}' must be in {}{}, {}], got {}", key, lo_open ? "(" : "[", lo, hi, x));
    return x;
  }

  std::optional<int64_t> integer(const std::string& key, int64_t lo, int64_t hi) {
    const json* v = get(key);
    if (!v) return std::nullopt;
    int64_t x = 0;
    if (v->is_number_integer()) {
      if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX))
        bad(key, fmt::format("'{}' is too large", key));
      x = v->get<int64_t>();
    } else if (v->is_number_float() && std::isfinite(v->get<double>()) &&
               v->get<double>() == std::floor(v->get<double>()) &&
               std::fabs(v->get<double>()) < 9e15) {
      x = int64_t(v->get<double>());
    } else {
      wrong_type(key, *v, "an integer");
    }
    if (x < lo || x > hi)
      bad(key, fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, x));
    return x;
  }

  std::optional<bool> boolean(const std::string& key) {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) wrong_type(key, *v, "a boolean");
    return v->get<bool>();
  }

  std::optional<std::string> string(const std::string& key) {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) wrong_type(key, *v, "a string");
    return v->get<std::string>();
  }

  // A field this server does not implement: accepted only at its neutral value.
  void only_neutral(const std::string& key, const std::function<bool(const json&)>& neutral,
                    const std::string& what) {
    const json* v = get(key);
    if (v && !neutral(*v))
      throw ApiError(400, fmt::format("'{}' is not supported: {}", key, what),
                     "invalid_request_error", "unsupported_parameter", key);
  }

  void reject_unknown(const std::string& where) const {
    for (auto it = obj_.begin(); it != obj_.end(); ++it)
      if (!seen_.count(it.key()))
        throw ApiError(400,
                       fmt::format("unrecognized request argument in {}: '{}'", where, it.key()),
                       "invalid_request_error", "unknown_parameter", it.key());
  }

 private:
  const json& obj_;
  std::set<std::string> seen_;
};

json parse_body(const std::string& body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    throw ApiError(400, fmt::format("the request body is not valid JSON: {}", e.what()),
                   "invalid_request_error", "invalid_json");
  }
  if (!j.is_object())
    throw ApiError(400, fmt::format("the request body must be a JSON object, not {}", type_name(j)),
                   "invalid_request_error", "invalid_json");
  return j;
}

void parse_sampling(Fields& f, SamplingFields& s, bool chat) {
  s.temperature = f.number("temperature", 0, 100);
  s.top_p = f.number("top_p", 0, 1, /*lo_open=*/true);
  s.min_p = f.number("min_p", 0, 1);
  s.presence_penalty = f.number("presence_penalty", -2, 2);
  s.frequency_penalty = f.number("frequency_penalty", -2, 2);
  s.repetition_penalty = f.number("repetition_penalty", 0, 100, /*lo_open=*/true);
  s.top_k = f.integer("top_k", -1, 1 << 30);
  s.seed = f.integer("seed", INT64_MIN, INT64_MAX);
  s.n = int(f.integer("n", 1, kMaxChoices).value_or(1));
  std::optional<int64_t> max_tokens = f.integer("max_tokens", 1, INT64_MAX);
  if (chat) {
    // max_completion_tokens is the newer name; when both are given it wins.
    if (auto m = f.integer("max_completion_tokens", 1, INT64_MAX)) max_tokens = m;
  }
  s.max_tokens = max_tokens;
  if (const json* stop = f.get("stop")) {
    std::vector<std::string> stops;
    if (stop->is_string()) {
      stops.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (const auto& x : *stop) {
        if (!x.is_string()) wrong_type("stop", x, "a string or a list of strings");
        stops.push_back(x.get<std::string>());
      }
    } else {
      wrong_type("stop", *stop, "a string or a list of strings");
    }
    if (stops.size() > kMaxStops)
      bad("stop", fmt::format("'stop' takes at most {} strings", kMaxStops));
    for (const auto& x : stops)
      if (x.empty()) bad("stop", "'stop' strings must not be empty");
    s.stop = std::move(stops);
  }
  s.include_stop_str_in_output = f.boolean("include_stop_str_in_output");
  s.ignore_eos = f.boolean("ignore_eos").value_or(false);
  s.stream = f.boolean("stream").value_or(false);
  if (const json* so = f.get("stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", *so, "an object");
    if (!s.stream) bad("stream_options", "'stream_options' is only allowed when 'stream' is true");
    Fields o(*so);
    s.include_usage = o.boolean("include_usage").value_or(false);
    o.reject_unknown("stream_options");
  }
  f.string("user");  // an end-user identifier for the caller's records; nothing to do here
  f.only_neutral(
      "logit_bias", [](const json& v) { return v.is_object() && v.empty(); },
      "logit biases are not implemented");
  const int n = s.n;
  f.only_neutral(
      "best_of", [n](const json& v) { return v.is_number_integer() && (v == 1 || v == n); },
      "best_of other than n is not implemented");
  f.only_neutral(
      "num_beams", [](const json& v) { return v.is_number_integer() && v == 1; },
      "beam search is not implemented");
}

std::string message_content(const json& content, size_t index) {
  const std::string where = fmt::format("messages[{}].content", index);
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) wrong_type(where, content, "a string or a list of content parts");
  // Text parts are joined with newlines (as vLLM joins them).
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string pw = fmt::format("{}[{}]", where, i);
    if (!part.is_object()) wrong_type(pw, part, "an object");
    Fields pf(part);
    std::optional<std::string> type = pf.string("type");
    if (!type) bad(pw, fmt::format("'{}' needs a 'type'", pw));
    if (*type != "text")
      throw ApiError(
          400,
          fmt::format("{}: content parts of type '{}' are not supported; only text is", pw, *type),
          "invalid_request_error", "unsupported_content", pw);
    std::optional<std::string> t = pf.string("text");
    if (!t) bad(pw, fmt::format("'{}' of type text needs a 'text' string", pw));
    pf.reject_unknown(pw);
    if (i) text += "\n";
    text += *t;
  }
  return text;
}

std::vector<ChatMessage> parse_messages(const json* msgs) {
  if (!msgs) bad("messages", "'messages' is required");
  if (!msgs->is_array()) wrong_type("messages", *msgs, "a list of messages");
  if (msgs->empty()) bad("messages", "'messages' must not be empty");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) wrong_type(where, m, "an object");
    Fields f(m);
    std::optional<std::string> role = f.string("role");
    if (!role) bad(where, fmt::format("'{}' needs a 'role'", where));
    ChatMessage cm;
    if (*role == "system" || *role == "developer") {
      cm.role = "system";
    } else if (*role == "user" || *role == "assistant") {
      cm.role = *role;
    } else if (*role == "tool" || *role == "function") {
      throw ApiError(
          400,
          fmt::format("{}: '{}' messages are not supported (no tool calling yet)", where, *role),
          "invalid_request_error", "unsupported_role", where + ".role");
    } else {
      bad(where + ".role",
          fmt::format("{}: unknown role '{}' (system, user or assistant)", where, *role));
    }
    const json* content = f.get("content");
    if (content) {
      cm.content = message_content(*content, i);
    } else if (cm.role != "assistant") {
      bad(where + ".content", fmt::format("'{}.content' is required", where));
    }
    if (cm.role == "assistant")
      if (auto r = f.string("reasoning_content")) cm.reasoning_content = *r;
    f.string("name");  // a participant name; chat templates here have no place for it
    f.only_neutral(
        "tool_calls", [](const json& v) { return v.is_array() && v.empty(); },
        "tool calls are not implemented");
    // Fields the OpenAI client copies from earlier responses into the history.
    f.get("refusal");
    f.get("annotations");
    f.reject_unknown(where);
    out.push_back(std::move(cm));
  }
  return out;
}

}  // namespace

json error_json(int status, const std::string& message, const std::string& type,
                const std::string& code, const std::string& param) {
  (void)status;
  json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  return json{{"error", e}};
}

json error_json(const ApiError& e) {
  return error_json(e.status, e.what(), e.type, e.code, e.param);
}

ChatRequest parse_chat_request(const std::string& body, int max_logprobs) {
  json j = parse_body(body);
  Fields f(j);
  ChatRequest r;
  r.model = f.string("model").value_or("");
  r.messages = parse_messages(f.get("messages"));
  parse_sampling(f, r.sampling, /*chat=*/true);
  r.logprobs = f.boolean("logprobs");
  if (auto k = f.integer("top_logprobs", 0, max_logprobs)) {
    if (!r.logprobs.value_or(false))
      bad("top_logprobs", "'top_logprobs' needs 'logprobs' set to true");
    r.top_logprobs = int(*k);
  }
  if (const json* kw = f.get("chat_template_kwargs")) {
    if (!kw->is_object()) wrong_type("chat_template_kwargs", *kw, "an object");
    Fields k(*kw);
    r.enable_thinking = k.boolean("enable_thinking");
    k.reject_unknown("chat_template_kwargs (only enable_thinking is known)");
  }
  f.only_neutral(
      "tools", [](const json& v) { return v.is_array() && v.empty(); },
      "tool calling is not implemented");
  f.only_neutral(
      "tool_choice", [](const json& v) { return v == "none"; }, "tool calling is not implemented");
  f.only_neutral(
      "parallel_tool_calls", [](const json& v) { return v.is_boolean(); },
      "tool calling is not implemented");
  f.only_neutral(
      "response_format",
      [](const json& v) { return v.is_object() && v.value("type", "") == "text" && v.size() == 1; },
      "only {\"type\": \"text\"} is implemented");
  f.reject_unknown("the request");
  return r;
}

CompletionRequest parse_completion_request(const std::string& body, int max_logprobs) {
  json j = parse_body(body);
  Fields f(j);
  CompletionRequest r;
  r.model = f.string("model").value_or("");
  const json* p = f.get("prompt");
  if (!p) bad("prompt", "'prompt' is required");
  if (p->is_string()) {
    r.prompts.push_back(p->get<std::string>());
  } else if (p->is_array()) {
    if (p->empty()) bad("prompt", "'prompt' must not be an empty list");
    for (const auto& x : *p) {
      if (x.is_number_integer() || x.is_array())
        throw ApiError(400, "prompts given as token ids are not supported; send text",
                       "invalid_request_error", "unsupported_value", "prompt");
      if (!x.is_string()) wrong_type("prompt", x, "a string or a list of strings");
      r.prompts.push_back(x.get<std::string>());
    }
    if (r.prompts.size() > size_t(kMaxChoices))
      bad("prompt", fmt::format("'prompt' takes at most {} strings", kMaxChoices));
  } else {
    wrong_type("prompt", *p, "a string or a list of strings");
  }
  for (const auto& s : r.prompts)
    if (s.empty()) bad("prompt", "a prompt must not be empty");
  parse_sampling(f, r.sampling, /*chat=*/false);
  r.echo = f.boolean("echo").value_or(false);
  if (auto k = f.integer("logprobs", 0, max_logprobs)) r.logprobs = int(*k);
  f.only_neutral(
      "suffix", [](const json& v) { return v.is_string() && v.get<std::string>().empty(); },
      "insertion after a suffix is not implemented");
  f.reject_unknown("the request");
  return r;
}

namespace {
json bytes_json(const std::string& b) {
  json a = json::array();
  for (unsigned char c : b) a.push_back(int(c));
  return a;
}
}  // namespace

json chat_logprobs_json(const std::vector<TokenLogprob>& lps, const TokenTextFn& text) {
  json content = json::array();
  for (const auto& lp : lps) {
    TokenText t = text(lp.token);
    json top = json::array();
    for (const auto& [id, v] : lp.top) {
      TokenText tt = text(id);
      top.push_back({{"token", tt.text}, {"logprob", v}, {"bytes", bytes_json(tt.bytes)}});
    }
    content.push_back({{"token", t.text},
                       {"logprob", lp.logprob},
                       {"bytes", bytes_json(t.bytes)},
                       {"top_logprobs", top}});
  }
  return json{{"content", content}};
}

json completion_logprobs_json(const std::vector<TokenLogprob>& lps, const TokenTextFn& text,
                              size_t first_offset, bool leading_null, int32_t leading_token) {
  json tokens = json::array(), values = json::array(), tops = json::array(),
       offsets = json::array();
  size_t offset = first_offset;
  auto add = [&](int32_t id, const TokenLogprob* lp) {
    TokenText t = text(id);
    tokens.push_back(t.text);
    offsets.push_back(offset);
    offset += t.text.size();
    if (!lp) {
      values.push_back(nullptr);
      tops.push_back(nullptr);
      return;
    }
    values.push_back(lp->logprob);
    json top = json::object();
    for (const auto& [tid, v] : lp->top) top[text(tid).text] = v;
    tops.push_back(top);
  };
  if (leading_null) add(leading_token, nullptr);
  for (const auto& lp : lps) add(lp.token, &lp);
  return json{{"tokens", tokens},
              {"token_logprobs", values},
              {"top_logprobs", tops},
              {"text_offset", offsets}};
}

json usage_json(int64_t prompt_tokens, int64_t completion_tokens) {
  return json{{"prompt_tokens", prompt_tokens},
              {"completion_tokens", completion_tokens},
              {"total_tokens", prompt_tokens + completion_tokens}};
}

std::string random_id(const std::string& prefix) {
  thread_local std::mt19937_64 gen{std::random_device{}()};
  return fmt::format("{}{:016x}{:016x}", prefix, gen(), gen());
}

}  // namespace swiftlet::serve
