// Llama 3 header format. `llama3` mirrors Meta-Llama-3's Jinja template (each message trimmed,
// BOS before the first header); `llama3_2` (ms-swift's name for Llama 3.1/3.2) always opens with
// a system header carrying "Cutting Knowledge Date"/"Today Date" lines, as those templates do.
// Meta-Llama-3's template appends the assistant header even when add_generation_prompt is false;
// swiftlet honours the flag, so a training conversation ends with its last turn (as in ms-swift).
#include <fmt/format.h>

#include <ctime>

#include "template/chat_template.h"
#include "template/template_text.h"

namespace swiftlet {

using namespace template_detail;

namespace {

// "%d %b %Y" of today's local date, spelled out so the C library locale cannot change it.
std::string today_date_string() {
  static const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  return fmt::format("{:02d} {} {}", local.tm_mday, kMonths[local.tm_mon], local.tm_year + 1900);
}

std::string header(const std::string& role) {
  return "<|start_header_id|>" + role + "<|end_header_id|>\n\n";
}

}  // namespace

void ChatTemplate::build_llama3(const std::vector<ChatMessage>& messages,
                                const TemplateOptions& options, SegmentBuilder& out) const {
  const std::string bos = tokens_.bos.empty() ? "<|begin_of_text|>" : tokens_.bos;
  std::vector<ChatMessage> msgs;
  if (kind_ == Kind::kLlama3Date) {
    // The system turn always exists; a leading system message (or options.system) fills it.
    std::string system;
    size_t start = 0;
    if (messages[0].role == "system") {
      system = py_strip(messages[0].content);
      start = 1;
    } else if (options.system) {
      system = py_strip(*options.system);
    }
    const std::string date = options.date_string ? *options.date_string : today_date_string();
    out.add(bos + header("system") + "Cutting Knowledge Date: December 2023\nToday Date: " + date +
                "\n\n" + system + "<|eot_id|>",
            false);
    msgs.assign(messages.begin() + start, messages.end());
  } else {
    msgs = with_system(messages, options);
    out.add(bos, false);
  }
  for (size_t i = 0; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    if (m.role != "assistant") {
      out.add(header(m.role) + py_strip(m.content) + "<|eot_id|>", false);
      continue;
    }
    out.add(header("assistant"), false);
    out.add(py_strip(m.content), true);
    // As for ChatML: the final "<|eot_id|>" is trained, a separator only after a trained token.
    out.add("<|eot_id|>", i + 1 == msgs.size() || out.ends_with_loss());
  }
}

}  // namespace swiftlet
