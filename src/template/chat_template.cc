#include "template/chat_template.h"

#include <fmt/format.h>

#include <algorithm>
#include <string_view>

#include "core/error.h"
#include "template/template_text.h"

namespace swiftlet {

using template_detail::SegmentBuilder;

namespace {

constexpr const char* kHelpfulSystem = "You are a helpful assistant.";
constexpr const char* kQwen25System =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

std::string known_list() { return fmt::format("{}", fmt::join(ChatTemplate::known_names(), ", ")); }

bool contains(std::string_view text, std::string_view what) {
  return text.find(what) != std::string_view::npos;
}

}  // namespace

const std::vector<std::string>& ChatTemplate::known_names() {
  static const std::vector<std::string> kNames = {
      "chatml", "default", "llama3", "llama3_2",         "plain",
      "qwen",   "qwen2_5", "qwen3",  "qwen3_nothinking", "qwen3_thinking"};
  return kNames;
}

ChatTemplate ChatTemplate::by_name(const std::string& name, const SpecialTokens& tokens) {
  ChatTemplate t;
  t.name_ = name;
  t.tokens_ = tokens;
  const std::vector<std::string> qwen_stops = {"<|endoftext|>", "<|im_end|>"};
  if (name == "chatml") {
    t.auto_add_bos_ = true;
    t.template_stop_words_ = {"<|im_end|>"};
  } else if (name == "qwen" || name == "qwen2_5") {
    t.default_system_ = name == "qwen" ? kHelpfulSystem : kQwen25System;
    t.template_stop_words_ = qwen_stops;
  } else if (name == "qwen3" || name == "qwen3_thinking" || name == "qwen3_nothinking") {
    t.thinking_ = name == "qwen3"            ? Thinking::kHybrid
                  : name == "qwen3_thinking" ? Thinking::kAlways
                                             : Thinking::kNone;
    t.template_stop_words_ = qwen_stops;
  } else if (name == "llama3" || name == "llama3_2") {
    t.kind_ = name == "llama3" ? Kind::kLlama3 : Kind::kLlama3Date;
    t.template_stop_words_ = {"<|eot_id|>"};
  } else if (name == "default") {
    t.kind_ = Kind::kDefault;
    t.default_system_ = kHelpfulSystem;
    t.auto_add_bos_ = true;
  } else if (name == "plain") {
    t.kind_ = Kind::kPlain;
    t.auto_add_bos_ = true;
  } else {
    throw Error(fmt::format("--template {}: unknown chat template (known: {})", name, known_list()),
                "pass one of the known names, or leave --template out to detect it from the "
                "model folder");
  }
  return t;
}

std::string ChatTemplate::detect(const std::string& model_type,
                                 const std::string& chat_template_jinja) {
  const std::string_view text = chat_template_jinja;
  if (contains(text, "<|im_start|>")) {
    if (contains(text, "enable_thinking")) return "qwen3";
    // Qwen3 Thinking-2507 opens the think block in the generation prompt itself; the template
    // source spells the newlines as the two characters "\n" inside a Jinja string literal.
    if (contains(text, "<|im_start|>assistant\\n<think>\\n") ||
        contains(text, "<|im_start|>assistant\n<think>\n"))
      return "qwen3_thinking";
    if (contains(text, kQwen25System)) return "qwen2_5";
    if (model_type.starts_with("qwen3")) return "qwen3_nothinking";
    if (contains(text, kHelpfulSystem)) return "qwen";
    return "chatml";
  }
  if (contains(text, "<|start_header_id|>"))
    return contains(text, "Cutting Knowledge Date") ? "llama3_2" : "llama3";
  if (model_type == "qwen3" || model_type == "qwen3_moe") return "qwen3";
  if (model_type == "qwen2" || model_type == "qwen2_moe") return "qwen2_5";
  if (model_type == "llama") return "llama3";
  throw Error(fmt::format("cannot tell the chat template of model_type '{}' from config.json and "
                          "the chat_template of tokenizer_config.json",
                          model_type),
              fmt::format("pass --template with one of: {}", known_list()));
}

std::vector<std::string> ChatTemplate::stop_words() const {
  std::vector<std::string> words = template_stop_words_;
  if (!tokens_.eos.empty() && std::find(words.begin(), words.end(), tokens_.eos) == words.end())
    words.push_back(tokens_.eos);
  return words;
}

std::string ChatTemplate::generation_prompt(const TemplateOptions& options) const {
  check(/*messages=*/{}, options);
  switch (kind_) {
    case Kind::kChatml:
      if (thinking_ == Thinking::kAlways) return "<|im_start|>assistant\n<think>\n";
      if (thinking_ == Thinking::kHybrid && options.enable_thinking == false)
        return "<|im_start|>assistant\n<think>\n\n</think>\n\n";
      return "<|im_start|>assistant\n";
    case Kind::kLlama3:
    case Kind::kLlama3Date:
      return "<|start_header_id|>assistant<|end_header_id|>\n\n";
    case Kind::kDefault:
      return "### Assistant:\n";
    case Kind::kPlain:
      return "";
  }
  return "";
}

// Validates the options always, and the messages when there are any.
void ChatTemplate::check(const std::vector<ChatMessage>& messages,
                         const TemplateOptions& options) const {
  if (options.enable_thinking == true && thinking_ == Thinking::kNone)
    throw Error(fmt::format("template {}: enable_thinking is true but this template has no "
                            "thinking mode",
                            name_),
                "use a thinking template (qwen3, qwen3_thinking) or leave enable_thinking unset");
  if (options.enable_thinking == false && thinking_ == Thinking::kAlways)
    throw Error(fmt::format("template {}: enable_thinking false is not possible, this model "
                            "always thinks",
                            name_),
                "use --template qwen3 (hybrid thinking) or qwen3_nothinking for such a model");
  if (options.date_string && kind_ != Kind::kLlama3Date)
    throw Error(fmt::format("template {}: date_string is set but this template has no "
                            "'Today Date' line",
                            name_),
                "date_string applies to llama3_2 (Llama 3.1/3.2) only");
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "tool")
      throw Error(fmt::format("template {}: messages[{}] has role 'tool'; tool messages are not "
                              "supported yet",
                              name_, i),
                  "remove tool calls and tool results from the conversation");
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      throw Error(fmt::format("template {}: messages[{}] has unknown role '{}'", name_, i, m.role),
                  "roles are system, user and assistant");
    if (!m.reasoning_content.empty() && m.role != "assistant")
      throw Error(fmt::format("template {}: messages[{}] is a {} message with reasoning_content; "
                              "only assistant messages carry reasoning",
                              name_, i, m.role),
                  "drop reasoning_content from that message");
    if (!m.reasoning_content.empty() && thinking_ == Thinking::kNone)
      throw Error(fmt::format("template {}: messages[{}] has reasoning_content but this template "
                              "has no thinking, it would be lost",
                              name_, i),
                  "use a thinking template (qwen3, qwen3_thinking) or drop the reasoning");
  }
}

std::vector<ChatMessage> ChatTemplate::with_system(const std::vector<ChatMessage>& messages,
                                                   const TemplateOptions& options) const {
  if (!messages.empty() && messages[0].role == "system") return messages;
  const std::optional<std::string>& system = options.system ? options.system : default_system_;
  if (!system || system->empty()) return messages;
  std::vector<ChatMessage> out;
  out.reserve(messages.size() + 1);
  out.push_back({"system", *system, ""});
  out.insert(out.end(), messages.begin(), messages.end());
  return out;
}

std::vector<TemplateSegment> ChatTemplate::build(const std::vector<ChatMessage>& messages,
                                                 const TemplateOptions& options,
                                                 bool generation_prompt) const {
  if (messages.empty())
    throw Error(fmt::format("template {}: the conversation has no messages", name_),
                "give at least one user message");
  check(messages, options);
  SegmentBuilder out;
  switch (kind_) {
    case Kind::kChatml:
      build_chatml(messages, options, out);
      break;
    case Kind::kLlama3:
    case Kind::kLlama3Date:
      build_llama3(messages, options, out);
      break;
    case Kind::kDefault:
    case Kind::kPlain:
      build_rounds(messages, options, out);
      break;
  }
  if (generation_prompt) out.add(this->generation_prompt(options), false);
  return out.take();
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                 const TemplateOptions& options) const {
  std::string text;
  for (const TemplateSegment& s : build(messages, options, options.add_generation_prompt))
    text += s.text;
  return text;
}

std::vector<TemplateSegment> ChatTemplate::render_segments(const std::vector<ChatMessage>& messages,
                                                           const TemplateOptions& options) const {
  return build(messages, options, /*generation_prompt=*/false);
}

}  // namespace swiftlet
