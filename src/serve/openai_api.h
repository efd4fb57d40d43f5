#pragma once
// The OpenAI HTTP API's JSON: requests of /v1/chat/completions and /v1/completions parsed and
// checked (wrong types and out-of-range values are ApiErrors, answered with HTTP 400 in OpenAI's
// error form), and the response, chunk, logprobs and model-list objects built.
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "infer/engine.h"
#include "template/chat_template.h"

namespace swiftlet::serve {

using json = nlohmann::json;

// An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string type = "invalid_request_error",
           std::string code = "", std::string param = "")
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        code(std::move(code)),
        param(std::move(param)) {}
  int status;
  std::string type, code, param;
};

json error_json(int status, const std::string& message, const std::string& type,
                const std::string& code = "", const std::string& param = "");
json error_json(const ApiError& e);

// Fields both endpoints share. Unset optionals fall back to the server's flags, then to the
// model's generation_config.json.
struct SamplingFields {
  std::optional<double> temperature, top_p, min_p, presence_penalty, frequency_penalty,
      repetition_penalty;
  std::optional<int64_t> top_k, max_tokens, seed;
  std::optional<std::vector<std::string>> stop;
  std::optional<bool> include_stop_str_in_output;
  bool ignore_eos = false;  // vLLM's extension: only max_tokens ends generation (benchmarks)
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

struct ChatRequest {
  std::string model;  // "" when the request names none
  std::vector<ChatMessage> messages;
  std::optional<bool> enable_thinking;  // chat_template_kwargs.enable_thinking
  SamplingFields sampling;
  std::optional<bool> logprobs;
  std::optional<int> top_logprobs;
};

struct CompletionRequest {
  std::string model;
  std::vector<std::string> prompts;
  SamplingFields sampling;
  bool echo = false;
  std::optional<int> logprobs;  // alternatives per token (0 = the chosen token only)
};

// Parse and check a request body; throw ApiError (400) naming the field at fault.
ChatRequest parse_chat_request(const std::string& body, int max_logprobs);
CompletionRequest parse_completion_request(const std::string& body, int max_logprobs);

// The text of a token as OpenAI reports it (invalid UTF-8 as U+FFFD) and its raw bytes.
struct TokenText {
  std::string text;
  std::string bytes;
};
using TokenTextFn = std::function<TokenText(int32_t)>;

// choices[].logprobs of a chat completion: {"content": [{token, logprob, bytes, top_logprobs}]}.
json chat_logprobs_json(const std::vector<TokenLogprob>& lps, const TokenTextFn& text);

// choices[].logprobs of a text completion: {tokens, token_logprobs, top_logprobs, text_offset};
// `first_offset` is where the first token's text starts in the choice's text. `leading_null`
// puts a null first entry (the echoed prompt's first token, which has no log-probability).
json completion_logprobs_json(const std::vector<TokenLogprob>& lps, const TokenTextFn& text,
                              size_t first_offset, bool leading_null = false,
                              int32_t leading_token = -1);

json usage_json(int64_t prompt_tokens, int64_t completion_tokens);

// A random id such as "chatcmpl-3f2a..." (32 hex digits).
std::string random_id(const std::string& prefix);

}  // namespace swiftlet::serve
