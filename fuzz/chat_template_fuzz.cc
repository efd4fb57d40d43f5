// Chat-template inputs: a JSON list of messages (any roles and contents) rendered by every
// template, with and without the generation prompt and thinking, as text and as trained pieces.
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "template/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace swiftlet;
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (!j.is_array()) return 0;
  std::vector<ChatMessage> messages;
  for (const auto& m : j) {
    if (!m.is_object()) return 0;
    ChatMessage c;
    if (m.contains("role") && m["role"].is_string()) c.role = m["role"];
    if (m.contains("content") && m["content"].is_string()) c.content = m["content"];
    if (m.contains("reasoning_content") && m["reasoning_content"].is_string())
      c.reasoning_content = m["reasoning_content"];
    messages.push_back(std::move(c));
  }
  for (const std::string& name : ChatTemplate::known_names()) {
    const ChatTemplate t = ChatTemplate::by_name(name);
    for (int flags = 0; flags < 4; ++flags) {
      TemplateOptions o;
      o.add_generation_prompt = flags & 1;
      o.enable_thinking = bool(flags & 2);
      fuzz::refused_only_with_error([&] {
        const std::string text = t.render(messages, o);
        std::string joined;
        for (const auto& s : t.render_segments(messages, o)) joined += s.text;
        TemplateOptions no_prompt = o;
        no_prompt.add_generation_prompt = false;
        if (joined != t.render(messages, no_prompt))
          throw InternalError("render_segments does not join to render");
        (void)text;
      });
    }
  }
  return 0;
}
