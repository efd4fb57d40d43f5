// Templates without a packaged Jinja file (chatml, qwen, qwen2_5, qwen3_thinking,
// qwen3_nothinking, llama3_2, default, plain) against hand-written text; detection, stop words,
// generation prompts, the Python string semantics the templates rely on, and every error.
#include "template/chat_template.h"

#include <gtest/gtest.h>

#include <ctime>

#include "core/error.h"
#include "template/conversations.h"
#include "template/template_text.h"

namespace swiftlet {
namespace {

using testing::bot;
using testing::sys;
using testing::usr;

TemplateOptions no_generation_prompt() {
  TemplateOptions o;
  o.add_generation_prompt = false;
  return o;
}

TEST(ChatTemplate, ChatmlHasNoDefaultSystemAndAddsTheTokenizersBos) {
  const ChatTemplate t = ChatTemplate::by_name("chatml");
  EXPECT_EQ(t.render({usr("Hi")}), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  TemplateOptions o;
  o.system = "S";
  EXPECT_EQ(t.render({usr("Hi")}, o),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  const ChatTemplate with_bos = ChatTemplate::by_name("chatml", {"<s>", "</s>"});
  EXPECT_EQ(with_bos.render({usr("Hi"), bot("Yo")}, no_generation_prompt()),
            "<s><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n");
}

TEST(ChatTemplate, Qwen25InjectsItsDefaultSystemUnlessOverridden) {
  const ChatTemplate t = ChatTemplate::by_name("qwen2_5");
  const std::string qwen_system =
      "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
      "assistant.<|im_end|>\n";
  EXPECT_EQ(t.render({usr("Hi")}),
            qwen_system + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  TemplateOptions o;
  o.system = "Be brief.";
  EXPECT_EQ(t.render({usr("Hi")}, o),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  o.system = "";  // ms-swift --system '': no system turn at all
  EXPECT_EQ(t.render({usr("Hi")}, o), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  o.system = "ignored";  // a system message in the conversation wins
  EXPECT_EQ(t.render({sys("Mine"), usr("Hi")}, o),
            "<|im_start|>system\nMine<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  // Qwen2.5 keeps assistant text as it is, think tags included, in every turn.
  EXPECT_EQ(
      t.render({usr("q"), bot("<think>r</think>a"), usr("q2"), bot("b")}, no_generation_prompt()),
      qwen_system +
          "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>r</think>a"
          "<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n");
  ASSERT_TRUE(t.default_system().has_value());
  EXPECT_EQ(*t.default_system(),
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
}

TEST(ChatTemplate, QwenUsesTheQwen2DefaultSystem) {
  const ChatTemplate t = ChatTemplate::by_name("qwen");
  EXPECT_EQ(t.render({usr("Hi")}),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, Qwen3ThinkingOpensTheThinkBlockInThePrompt) {
  const ChatTemplate t = ChatTemplate::by_name("qwen3_thinking");
  EXPECT_EQ(t.render({usr("q")}),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n");
  TemplateOptions thinking;
  thinking.enable_thinking = true;
  EXPECT_EQ(t.render({usr("q")}, thinking), t.render({usr("q")}));
  EXPECT_EQ(t.render({usr("q"), bot("a", "r")}, no_generation_prompt()),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\na"
            "<|im_end|>\n");
  // History before the last user query loses its thinking, as in Qwen3's template.
  EXPECT_EQ(t.render({usr("q1"), bot("<think>\nr1\n</think>\n\na1"), usr("q2")}),
            "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
            "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>\n");
}

TEST(ChatTemplate, Qwen3NothinkingKeepsTextAsGiven) {
  const ChatTemplate t = ChatTemplate::by_name("qwen3_nothinking");
  EXPECT_FALSE(t.default_system().has_value());
  EXPECT_EQ(t.render({usr("q")}), "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n");
  TemplateOptions off;
  off.enable_thinking = false;
  EXPECT_EQ(t.render({usr("q")}, off), "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.render({usr("q"), bot("<think>x</think>y"), usr("z")}),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>x</think>y<|im_end|>\n"
            "<|im_start|>user\nz<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, Qwen3PreserveThinkingKeepsEveryThinkBlock) {
  const ChatTemplate t = ChatTemplate::by_name("qwen3");
  TemplateOptions o = no_generation_prompt();
  const std::vector<ChatMessage> row = {usr("q1"), bot("a1", "r1"), usr("q2"),
                                        bot("a2"), usr("q3"),       bot("a3")};
  EXPECT_EQ(t.render(row, o),
            "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
            "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\na2<|im_end|>\n"
            "<|im_start|>user\nq3<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\na3"
            "<|im_end|>\n");
  o.preserve_thinking = true;
  EXPECT_EQ(t.render(row, o),
            "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n<think>\nr1\n</think>\n\na1"
            "<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>\n\n"
            "</think>\n\na2<|im_end|>\n<|im_start|>user\nq3<|im_end|>\n<|im_start|>assistant\n"
            "<think>\n\n</think>\n\na3<|im_end|>\n");
  // Templates without thinking have nothing to remove: the option changes nothing.
  const ChatTemplate chatml = ChatTemplate::by_name("chatml");
  const std::vector<ChatMessage> inline_think = {usr("q"), bot("<think>r</think>a"), usr("q2")};
  EXPECT_EQ(chatml.render(inline_think, o), chatml.render(inline_think, no_generation_prompt()));
}

TEST(ChatTemplate, Llama32HasTheDateLinesInItsSystemTurn) {
  const ChatTemplate t = ChatTemplate::by_name("llama3_2");
  TemplateOptions o;
  o.date_string = "26 Jul 2024";
  const std::string head =
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
      "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
  EXPECT_EQ(t.render({usr("Hi")}, o),
            head +
                "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n");
  o.add_generation_prompt = false;
  EXPECT_EQ(t.render({sys(" Be nice "), usr("Hi "), bot("\nHello")}, o),
            head +
                "Be nice<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>");
  o.system = "From options";
  EXPECT_EQ(t.render({usr("Hi")}, o),
            head +
                "From options<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi"
                "<|eot_id|>");
}

TEST(ChatTemplate, Llama32DefaultsToTodaysDate) {
  auto today = [] {
    const std::time_t now = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%d %b %Y", std::localtime(&now));  // "C" locale in tests
    return std::string(buf);
  };
  const std::string before = today();
  const std::string text = ChatTemplate::by_name("llama3_2").render({usr("Hi")});
  const std::string after = today();
  const bool found = text.find("Today Date: " + before + "\n\n") != std::string::npos ||
                     text.find("Today Date: " + after + "\n\n") != std::string::npos;
  EXPECT_TRUE(found) << text;
}

TEST(ChatTemplate, DefaultIsMsSwiftsHumanAssistantLayout) {
  const ChatTemplate t = ChatTemplate::by_name("default", {"<s>", "</s>"});
  EXPECT_EQ(t.render({usr("Hi")}),
            "<s>You are a helpful assistant.\n\n### Human:\nHi\n\n### Assistant:\n");
  EXPECT_EQ(t.render({usr("a"), bot("b"), usr("c"), bot("d")}, no_generation_prompt()),
            "<s>You are a helpful assistant.\n\n### Human:\na\n\n### Assistant:\nb\n\n"
            "### Human:\nc\n\n### Assistant:\nd</s>");
  TemplateOptions o;
  o.system = "";
  EXPECT_EQ(ChatTemplate::by_name("default").render({usr("x"), usr("y")}, o),
            "### Human:\nxy\n\n### Assistant:\n");  // same-role messages merge, as in ms-swift
  EXPECT_EQ(t.render({sys("S"), usr("x")}, no_generation_prompt()), "<s>S\n\n### Human:\nx\n\n");
}

TEST(ChatTemplate, PlainConcatenatesTextWithBosAndEos) {
  const ChatTemplate qwen_plain = ChatTemplate::by_name("plain", {"", "<|endoftext|>"});
  EXPECT_EQ(qwen_plain.render({bot("Raw text.")}, no_generation_prompt()),
            "Raw text.<|endoftext|>");
  EXPECT_EQ(qwen_plain.render({usr("Once upon"), bot(" a time")}, no_generation_prompt()),
            "Once upon a time<|endoftext|>");
  EXPECT_EQ(qwen_plain.render({usr("Complete this")}), "Complete this");
  const ChatTemplate llama_plain =
      ChatTemplate::by_name("plain", {"<|begin_of_text|>", "<|end_of_text|>"});
  EXPECT_EQ(llama_plain.render({bot("Text")}, no_generation_prompt()),
            "<|begin_of_text|>Text<|end_of_text|>");
}

TEST(ChatTemplate, GenerationPromptsAndStopWords) {
  TemplateOptions off;
  off.enable_thinking = false;
  const ChatTemplate qwen3 = ChatTemplate::by_name("qwen3", {"", "<|im_end|>"});
  EXPECT_EQ(qwen3.generation_prompt({}), "<|im_start|>assistant\n");
  EXPECT_EQ(qwen3.generation_prompt(off), "<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(ChatTemplate::by_name("qwen3_thinking").generation_prompt({}),
            "<|im_start|>assistant\n<think>\n");
  EXPECT_EQ(ChatTemplate::by_name("llama3").generation_prompt({}),
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(ChatTemplate::by_name("default").generation_prompt({}), "### Assistant:\n");
  EXPECT_EQ(ChatTemplate::by_name("plain").generation_prompt({}), "");

  using Words = std::vector<std::string>;
  EXPECT_EQ(qwen3.stop_words(), (Words{"<|endoftext|>", "<|im_end|>"}));
  EXPECT_EQ(ChatTemplate::by_name("qwen2_5", {"", "<|endoftext|>"}).stop_words(),
            (Words{"<|endoftext|>", "<|im_end|>"}));
  EXPECT_EQ(ChatTemplate::by_name("chatml").stop_words(), (Words{"<|im_end|>"}));
  EXPECT_EQ(ChatTemplate::by_name("llama3", {"<|begin_of_text|>", "<|end_of_text|>"}).stop_words(),
            (Words{"<|eot_id|>", "<|end_of_text|>"}));
  EXPECT_EQ(ChatTemplate::by_name("default", {"<s>", "</s>"}).stop_words(), (Words{"</s>"}));
}

TEST(ChatTemplate, DetectsTemplatesFromModelTypeAndTemplateText) {
  // Template text wins when recognised (snippets of the real templates' distinguishing parts).
  const std::string qwen25 =
      "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
      "assistant.<|im_end|>\\n' }}{{'<|im_start|>' + message['role'] + '\\n'}}";
  const std::string qwen2 =
      "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{{'<|im_start|>'}}";
  const std::string thinking2507 =
      "{{- '<|im_start|>' + message.role }}{%- if add_generation_prompt %}\n"
      "    {{- '<|im_start|>assistant\\n<think>\\n' }}\n{%- endif %}";
  const std::string instruct2507 =
      "{{- '<|im_start|>' + message.role + '\\n' + content }}{{- '<|im_start|>assistant\\n' }}";
  const std::string llama31 =
      "{{- bos_token }}{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}"
      "{{- \"Cutting Knowledge Date: December 2023\\n\" }}";
  EXPECT_EQ(ChatTemplate::detect("qwen2", qwen25), "qwen2_5");
  EXPECT_EQ(ChatTemplate::detect("qwen2", qwen2), "qwen");
  EXPECT_EQ(ChatTemplate::detect("qwen3", thinking2507), "qwen3_thinking");
  EXPECT_EQ(ChatTemplate::detect("qwen3", instruct2507), "qwen3_nothinking");
  EXPECT_EQ(ChatTemplate::detect("mistral", instruct2507), "chatml");
  EXPECT_EQ(ChatTemplate::detect("llama", llama31), "llama3_2");
  // Without a chat template the config's model_type decides.
  EXPECT_EQ(ChatTemplate::detect("qwen3", ""), "qwen3");
  EXPECT_EQ(ChatTemplate::detect("qwen3_moe", ""), "qwen3");
  EXPECT_EQ(ChatTemplate::detect("qwen2", ""), "qwen2_5");
  EXPECT_EQ(ChatTemplate::detect("llama", ""), "llama3");
  for (const std::string& name : ChatTemplate::known_names())
    EXPECT_EQ(ChatTemplate::by_name(name).name(), name);
}

// --- errors -------------------------------------------------------------------------------------

// Runs f and returns the Error it throws (message and hint), failing when it does not throw.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_FALSE(e.hint().empty()) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no Error thrown";
  return "";
}

TEST(ChatTemplateErrors, UnknownNameListsTheKnownOnes) {
  const std::string message = error_of([] { ChatTemplate::by_name("qwen2"); });
  EXPECT_NE(message.find("--template qwen2: unknown chat template"), std::string::npos) << message;
  for (const std::string& name : ChatTemplate::known_names())
    EXPECT_NE(message.find(name), std::string::npos) << name;
  const std::string detect = error_of([] { ChatTemplate::detect("gpt2", "{{ messages }}"); });
  EXPECT_NE(detect.find("model_type 'gpt2'"), std::string::npos) << detect;
}

TEST(ChatTemplateErrors, BadConversations) {
  const ChatTemplate qwen3 = ChatTemplate::by_name("qwen3");
  EXPECT_NE(error_of([&] { qwen3.render({}); }).find("the conversation has no messages"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              qwen3.render({usr("q"), {"tool", "{}", ""}});
            }).find("messages[1] has role 'tool'; tool messages are not supported yet"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              qwen3.render_segments({{"bot", "x", ""}});
            }).find("messages[0] has unknown role 'bot'"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              qwen3.render({{"user", "q", "why"}});
            }).find("only assistant messages carry reasoning"),
            std::string::npos);
  for (const char* name : {"chatml", "qwen", "qwen2_5", "qwen3_nothinking", "llama3", "llama3_2",
                           "default", "plain"}) {
    const ChatTemplate t = ChatTemplate::by_name(name, {"", "</s>"});
    const std::string message = error_of([&] { t.render({usr("q"), bot("a", "thought")}); });
    EXPECT_NE(message.find("messages[1] has reasoning_content but this template has no thinking"),
              std::string::npos)
        << name << ": " << message;
  }
}

TEST(ChatTemplateErrors, ThinkingOptionsATemplateCannotHonour) {
  TemplateOptions on, off;
  on.enable_thinking = true;
  off.enable_thinking = false;
  for (const char* name : {"chatml", "qwen", "qwen2_5", "qwen3_nothinking", "llama3", "llama3_2",
                           "default", "plain"}) {
    const ChatTemplate t = ChatTemplate::by_name(name);
    EXPECT_NE(error_of([&] {
                t.render({usr("q")}, on);
              }).find("enable_thinking is true but this template has no thinking mode"),
              std::string::npos)
        << name;
    EXPECT_NE(error_of([&] { t.generation_prompt(on); }).find("no thinking mode"),
              std::string::npos);
    EXPECT_NO_THROW(t.render({usr("q")}, off)) << name;  // not thinking is what it does anyway
  }
  const ChatTemplate thinking = ChatTemplate::by_name("qwen3_thinking");
  EXPECT_NE(error_of([&] { thinking.render({usr("q")}, off); }).find("always thinks"),
            std::string::npos);
  TemplateOptions dated;
  dated.date_string = "01 Jan 2025";
  EXPECT_NE(error_of([&] {
              ChatTemplate::by_name("llama3").render({usr("q")}, dated);
            }).find("template llama3: date_string is set"),
            std::string::npos);
}

TEST(ChatTemplateErrors, RoundTemplatesNeedEosAndShape) {
  const ChatTemplate no_eos = ChatTemplate::by_name("default");
  EXPECT_NO_THROW(no_eos.render({usr("q")}));  // a prompt needs no eos
  EXPECT_NE(error_of([&] {
              no_eos.render_segments({usr("q"), bot("a")});
            }).find("eos token, which was not given"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              ChatTemplate::by_name("plain").render({bot("text")});
            }).find("template plain: a final reply ends with the tokenizer's eos token"),
            std::string::npos);
  const ChatTemplate plain = ChatTemplate::by_name("plain", {"", "</s>"});
  EXPECT_NE(error_of([&] {
              plain.render({sys("S"), usr("q")});
            }).find("has no system prompt"),
            std::string::npos);
  TemplateOptions with_system;
  with_system.system = "S";
  EXPECT_NE(error_of([&] { plain.render({usr("q")}, with_system); }).find("has no system prompt"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              plain.render({usr("a"), bot("b"), usr("c")});
            }).find("renders one text and one reply, but the conversation has 3 turns"),
            std::string::npos);
  const ChatTemplate def = ChatTemplate::by_name("default", {"", "</s>"});
  EXPECT_NE(error_of([&] {
              def.render({usr("a"), sys("late")});
            }).find("messages[1] is a system message after the start"),
            std::string::npos);
  EXPECT_NE(error_of([&] { def.render({sys("only")}); }).find("has only a system message"),
            std::string::npos);
}

// --- Python string semantics --------------------------------------------------------------------

TEST(TemplateText, StripFollowsPythonWhitespace) {
  using template_detail::py_strip;
  EXPECT_EQ(py_strip(" \t\n\r\v\f x y \n"), "x y");
  EXPECT_EQ(py_strip("\u00a0\u3000\u2003é\u2028\u0085"), "é");  // Unicode spaces, NEL
  EXPECT_EQ(py_strip("\x1c\x1dz\x1e\x1f"), "z");                // separators count in Python
  EXPECT_EQ(py_strip("\ufeffz\u200b"), "\ufeffz\u200b");        // BOM / zero-width: not spaces
  EXPECT_EQ(py_strip("  \xff "), "\xff");                       // invalid UTF-8 kept
  EXPECT_EQ(py_strip("   "), "");
  EXPECT_EQ(template_detail::strip_newlines("\n\n a \n"), " a ");
  EXPECT_EQ(template_detail::lstrip_newlines("\n\n"), "");
  EXPECT_EQ(template_detail::rstrip_newlines("a\n \n\n"), "a\n ");
}

TEST(TemplateText, EmptyThinkPrefixIsMsSwiftsIgnoreEmptyThinkMatch) {
  using template_detail::empty_think_prefix;
  EXPECT_EQ(empty_think_prefix("<think>\n\n</think>\n\nanswer"), 19u);
  EXPECT_EQ(empty_think_prefix("<think></think>answer"), 15u);
  EXPECT_EQ(empty_think_prefix("<think>\u3000</think> \u00a0x"),
            std::string("<think>\u3000</think> \u00a0").size());
  EXPECT_EQ(empty_think_prefix("</think>\n\nx"), 10u);
  EXPECT_EQ(empty_think_prefix("<think>\nr\n</think>\n\nx"), 0u);
  EXPECT_EQ(empty_think_prefix(" <think></think>x"), 0u);
  EXPECT_EQ(empty_think_prefix("<think>\n\n"), 0u);
}

}  // namespace
}  // namespace swiftlet
