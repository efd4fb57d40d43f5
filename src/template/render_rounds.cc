// Templates that exist only in ms-swift (no Jinja counterpart), rendered with its round layout:
//   default: [bos] [{SYSTEM}\n\n] ### Human:\n{QUERY}\n\n### Assistant:\n{RESPONSE} (\n\n | eos)
//   plain (--use_chat_template false, `swift pt`): [bos] {QUERY}{RESPONSE}eos, one round, no
//   system: raw concatenation of the texts, as ms-swift's generation template.
// Consecutive same-role messages are merged and a conversation that starts with the assistant
// gets an empty user query (a pre-training row), as ms-swift does.
#include <fmt/format.h>

#include "core/error.h"
#include "template/chat_template.h"
#include "template/template_text.h"

namespace swiftlet {

using namespace template_detail;

void ChatTemplate::build_rounds(const std::vector<ChatMessage>& messages,
                                const TemplateOptions& options, SegmentBuilder& out) const {
  const bool is_default = kind_ == Kind::kDefault;
  size_t start = 0;
  std::optional<std::string> system = options.system ? options.system : default_system_;
  if (messages[0].role == "system") {
    system = messages[0].content;
    start = 1;
  }
  std::vector<ChatMessage> turns;
  for (size_t i = start; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "system")
      throw Error(fmt::format("template {}: messages[{}] is a system message after the start of "
                              "the conversation",
                              name_, i),
                  "this template has one system prompt, in the first message");
    if (!turns.empty() && turns.back().role == m.role) {
      turns.back().content += m.content;
    } else {
      turns.push_back(m);
    }
  }
  if (turns.empty())
    throw Error(fmt::format("template {}: the conversation has only a system message", name_),
                "add a user message");
  if (turns[0].role == "assistant") turns.insert(turns.begin(), ChatMessage{"user", "", ""});
  if (!is_default) {
    if (system && !system->empty())
      throw Error(fmt::format("template {} (no chat template) has no system prompt, but one is "
                              "given",
                              name_),
                  "remove the system message / --system, or use a chat template");
    if (turns.size() > 2)
      throw Error(fmt::format("template {} (no chat template) renders one text and one reply, "
                              "but the conversation has {} turns",
                              name_, turns.size()),
                  "use a chat template for multi-turn conversations");
  }

  if (auto_add_bos_) out.add(tokens_.bos, false);
  if (is_default && system && !system->empty()) out.add(*system + "\n\n", false);
  for (size_t i = 0; i < turns.size(); ++i) {
    const ChatMessage& m = turns[i];
    if (m.role == "user") {
      out.add(is_default ? "### Human:\n" + m.content + "\n\n" : m.content, false);
      continue;
    }
    out.add(is_default ? "### Assistant:\n" : "", false);
    out.add(m.content, true);
    if (i + 1 < turns.size()) {
      out.add("\n\n", false);  // chat separator; ms-swift trains only an eos-led separator
    } else {
      if (tokens_.eos.empty())
        throw Error(fmt::format("template {}: a final reply ends with the tokenizer's eos token, "
                                "which was not given",
                                name_),
                    "pass SpecialTokens with eos_token from tokenizer_config.json");
      out.add(tokens_.eos, true);
    }
  }
}

}  // namespace swiftlet
