// ChatML family: chatml, qwen (Qwen2), qwen2_5, qwen3 (hybrid thinking), qwen3_thinking,
// qwen3_nothinking. Mirrors the Qwen2/Qwen2.5/Qwen3 Jinja templates for system/user/assistant
// messages; the loss split follows ms-swift (reply + "<|im_end|>\n" trained, scaffolding not).
#include <string_view>

#include "template/chat_template.h"
#include "template/template_text.h"

namespace swiftlet {

using namespace template_detail;

namespace {

struct ThinkParts {
  std::string reasoning;
  std::string content;
};

// Qwen3 Jinja: reasoning_content when given, else the text between the last "<think>" before
// the first "</think>" and that "</think>"; the content is what follows the last "</think>".
ThinkParts split_reasoning(const ChatMessage& m) {
  if (!m.reasoning_content.empty()) return {m.reasoning_content, m.content};
  const std::string_view content = m.content;
  const size_t first_close = content.find("</think>");
  if (first_close == std::string_view::npos) return {"", m.content};
  const size_t last_close = content.rfind("</think>");
  std::string_view before = rstrip_newlines(content.substr(0, first_close));
  const size_t open = before.rfind("<think>");
  if (open != std::string_view::npos) before.remove_prefix(open + 7);
  return {std::string(lstrip_newlines(before)),
          std::string(lstrip_newlines(content.substr(last_close + 8)))};
}

// Qwen3 Jinja's last_query_index: the last user message that is not a wrapped tool response.
size_t last_query_index(const std::vector<ChatMessage>& msgs) {
  for (size_t i = msgs.size(); i-- > 0;) {
    const std::string_view c = msgs[i].content;
    if (msgs[i].role == "user" &&
        !(c.starts_with("<tool_response>") && c.ends_with("</tool_response>")))
      return i;
  }
  return msgs.size() - 1;
}

}  // namespace

void ChatTemplate::build_chatml(const std::vector<ChatMessage>& messages,
                                const TemplateOptions& options, SegmentBuilder& out) const {
  const std::vector<ChatMessage> msgs = with_system(messages, options);
  if (auto_add_bos_) out.add(tokens_.bos, false);
  const size_t n = msgs.size();
  const size_t last_query = last_query_index(msgs);
  for (size_t i = 0; i < n; ++i) {
    const ChatMessage& m = msgs[i];
    if (m.role != "assistant") {
      out.add("<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n", false);
      continue;
    }
    out.add("<|im_start|>assistant\n", false);
    const bool final_reply = i + 1 == n;
    if (thinking_ == Thinking::kNone) {
      out.add(m.content, true);
    } else {
      const ThinkParts parts = split_reasoning(m);
      // The Jinja template keeps a think block only after the last user query (always for the
      // final message); ms-swift's preserve_thinking keeps it on every turn.
      const bool with_think = options.preserve_thinking ||
                              (i > last_query && (final_reply || !parts.reasoning.empty()));
      const std::string reply =
          with_think ? "<think>\n" + std::string(strip_newlines(parts.reasoning)) +
                           "\n</think>\n\n" + std::string(lstrip_newlines(parts.content))
                     : parts.content;
      // ms-swift adds +ignore_empty_think to the loss of hybrid templates: an empty think block
      // is in the input but not trained.
      const size_t quiet = thinking_ == Thinking::kHybrid ? empty_think_prefix(reply) : 0;
      out.add(std::string_view(reply).substr(0, quiet), false);
      out.add(std::string_view(reply).substr(quiet), true);
    }
    // The final reply's suffix is always trained; a separator only right after a trained token.
    out.add("<|im_end|>\n", final_reply || out.ends_with_loss());
  }
}

}  // namespace swiftlet
