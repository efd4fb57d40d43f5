#pragma once
// Chat templates under ms-swift's names, rendered exactly as the models' own Jinja chat templates
// render them, plus the split of a training conversation into text pieces with and without loss.
//
//   ChatTemplate t = ChatTemplate::by_name("qwen3");
//   std::string prompt = t.render({{"user", "Hi"}}, {});   // "<|im_start|>user\nHi<|im_end|>\n..."
//   auto pieces = t.render_segments(row, {});              // [{text, loss}, ...]
//
// This layer produces text only; special tokens appear as their text ("<|im_end|>") and the
// tokenizer maps them to ids. Encode the rendered text without adding BOS/EOS again.
#include <optional>
#include <string>
#include <vector>

namespace swiftlet {

namespace template_detail {
class SegmentBuilder;
}

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant" ("tool" is refused for now)
  std::string content;
  // Qwen3 thinking text. Empty means "not given": the template then takes the reasoning out of a
  // "<think>...</think>" block in `content`, as the Qwen3 Jinja template does.
  std::string reasoning_content;
};

struct TemplateOptions {
  // Set: replaces the template's default system prompt; "" removes the default system turn
  // (ms-swift `--system ''`). A system message at the start of the conversation wins over both.
  std::optional<std::string> system;
  // Unset: the template's own default (Qwen3 hybrid thinks). false on qwen3 appends the empty
  // think block to the generation prompt. true on a template that cannot think, or false on
  // qwen3_thinking (which always thinks), is an Error.
  std::optional<bool> enable_thinking;
  bool add_generation_prompt = true;
  // ms-swift `--preserve_thinking true`: every assistant turn keeps its think block (an empty one
  // when it has no reasoning) instead of the Jinja template's removal of thinking from turns
  // before the last user query. Templates without thinking never remove anything.
  bool preserve_thinking = false;
  // llama3_2 only: the "Today Date: " line, e.g. "26 Jul 2024". Unset: today's local date in
  // the same "%d %b %Y" form (as ms-swift and Llama 3.2's template do). An Error elsewhere.
  std::optional<std::string> date_string;
};

struct TemplateSegment {
  std::string text;
  bool loss;  // true: these tokens are trained (labels), false: context only (-100)
  bool operator==(const TemplateSegment&) const = default;
};

// Text of the tokenizer's own special tokens (tokenizer_config.json `bos_token` / `eos_token`).
// Used by templates that add them as ms-swift does: chatml/default/plain prepend `bos` (when not
// empty); default/plain end a trained reply with `eos`; llama3* begin with `bos`
// (default "<|begin_of_text|>"). `eos` also joins stop_words().
struct SpecialTokens {
  std::string bos;
  std::string eos;
};

class ChatTemplate {
 public:
  // ms-swift template names: chatml, qwen, qwen2_5, qwen3, qwen3_thinking, qwen3_nothinking,
  // llama3, llama3_2, default; plus `plain` for `--use_chat_template false` / `swift pt`.
  static ChatTemplate by_name(const std::string& name, const SpecialTokens& tokens = {});
  static const std::vector<std::string>& known_names();

  // The ms-swift template name for a model folder, from config.json `model_type` and the text of
  // tokenizer_config.json `chat_template` (the text wins when it is recognised).
  static std::string detect(const std::string& model_type, const std::string& chat_template_jinja);

  const std::string& name() const { return name_; }
  const std::optional<std::string>& default_system() const { return default_system_; }
  // Strings that end generation (ms-swift: template stop words, end-of-turn, tokenizer eos).
  std::vector<std::string> stop_words() const;
  // Text appended to the conversation when options.add_generation_prompt is true.
  std::string generation_prompt(const TemplateOptions& options) const;

  // The conversation as the model's chat template renders it (plus the generation prompt when
  // options.add_generation_prompt is set).
  std::string render(const std::vector<ChatMessage>& messages,
                     const TemplateOptions& options = {}) const;

  // The complete conversation (never a generation prompt: options.add_generation_prompt does not
  // apply) split into adjacent pieces with their training flag, following ms-swift's default
  // loss_scale: assistant replies and the end-of-turn text after them carry loss; system/user
  // turns, assistant headers and Qwen3's empty think blocks do not. Adjacent pieces always differ
  // in flag; their concatenation equals render(messages, options without generation prompt).
  std::vector<TemplateSegment> render_segments(const std::vector<ChatMessage>& messages,
                                               const TemplateOptions& options = {}) const;

 private:
  enum class Kind { kChatml, kLlama3, kLlama3Date, kDefault, kPlain };
  enum class Thinking { kNone, kHybrid, kAlways };

  ChatTemplate() = default;
  void check(const std::vector<ChatMessage>& messages, const TemplateOptions& options) const;
  std::vector<TemplateSegment> build(const std::vector<ChatMessage>& messages,
                                     const TemplateOptions& options, bool generation_prompt) const;
  void build_chatml(const std::vector<ChatMessage>& messages, const TemplateOptions& options,
                    template_detail::SegmentBuilder& out) const;
  void build_llama3(const std::vector<ChatMessage>& messages, const TemplateOptions& options,
                    template_detail::SegmentBuilder& out) const;
  void build_rounds(const std::vector<ChatMessage>& messages, const TemplateOptions& options,
                    template_detail::SegmentBuilder& out) const;
  std::vector<ChatMessage> with_system(const std::vector<ChatMessage>& messages,
                                       const TemplateOptions& options) const;

  std::string name_;
  Kind kind_ = Kind::kChatml;
  Thinking thinking_ = Thinking::kNone;
  std::optional<std::string> default_system_;
  bool auto_add_bos_ = false;  // ms-swift auto_add_bos: prepend SpecialTokens::bos when given
  std::vector<std::string> template_stop_words_;
  SpecialTokens tokens_;
};

}  // namespace swiftlet
