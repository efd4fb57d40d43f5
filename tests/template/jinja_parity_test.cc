// swiftlet's qwen3 and llama3 templates against the real chat_template of the Qwen3 and Llama-3
// tokenizer packages, rendered by Hugging Face's Jinja implementation: identical text required.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "template/chat_template.h"
#include "template/conversations.h"
#include "template/jinja_oracle.h"

namespace swiftlet {
namespace {

using testing::Conversation;
using testing::OracleCase;

// What the Jinja template sees for swiftlet's options: options.system becomes a leading system
// message (neither template has a default system prompt, so "" changes nothing).
std::vector<ChatMessage> as_jinja_messages(const std::vector<ChatMessage>& messages,
                                           const TemplateOptions& options) {
  if (!options.system || options.system->empty() || messages[0].role == "system") return messages;
  std::vector<ChatMessage> out = {testing::sys(*options.system)};
  out.insert(out.end(), messages.begin(), messages.end());
  return out;
}

std::string escaped(const std::string& s) { return nlohmann::json(s).dump(); }

std::string describe(const Conversation& c, const TemplateOptions& o) {
  return fmt::format("{} | add_generation_prompt={} enable_thinking={} system={}", c.name,
                     o.add_generation_prompt,
                     o.enable_thinking ? (*o.enable_thinking ? "true" : "false") : "unset",
                     o.system ? escaped(*o.system) : "unset");
}

std::vector<TemplateOptions> option_grid(bool vary_thinking) {
  std::vector<TemplateOptions> grid;
  for (bool gen : {true, false}) {
    for (std::optional<bool> thinking :
         vary_thinking ? std::vector<std::optional<bool>>{std::nullopt, true, false}
                       : std::vector<std::optional<bool>>{std::nullopt}) {
      for (std::optional<std::string> system :
           {std::optional<std::string>(), std::optional<std::string>("You are terse."),
            std::optional<std::string>("")}) {
        TemplateOptions o;
        o.add_generation_prompt = gen;
        o.enable_thinking = thinking;
        o.system = system;
        grid.push_back(o);
      }
    }
  }
  return grid;
}

// Renders every conversation under every option set with swiftlet and with the oracle.
// Llama-3's template appends the assistant header even without add_generation_prompt; swiftlet
// leaves it out then (a training conversation ends with its last turn), so that case is compared
// with the oracle's text minus the header.
void expect_parity(const std::string& template_name, const char* package,
                   const std::vector<Conversation>& conversations,
                   const std::vector<TemplateOptions>& grid) {
  const ChatTemplate t = ChatTemplate::by_name(template_name);
  std::vector<OracleCase> cases;
  std::vector<std::string> ours, labels;
  std::vector<bool> strip_header;
  for (const Conversation& c : conversations) {
    for (const TemplateOptions& o : grid) {
      cases.push_back(
          {package, as_jinja_messages(c.messages, o), o.add_generation_prompt, o.enable_thinking});
      ours.push_back(t.render(c.messages, o));
      labels.push_back(describe(c, o));
      strip_header.push_back(template_name == "llama3" && !o.add_generation_prompt);
    }
  }
  const std::vector<std::string> reference = testing::jinja_render(cases);
  ASSERT_EQ(reference.size(), ours.size());
  const std::string header = "<|start_header_id|>assistant<|end_header_id|>\n\n";
  int mismatches = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    std::string expected = reference[i];
    if (strip_header[i]) {
      ASSERT_TRUE(expected.ends_with(header)) << labels[i] << ": " << escaped(expected);
      expected.resize(expected.size() - header.size());
    }
    if (ours[i] != expected && ++mismatches <= 10)
      ADD_FAILURE() << labels[i] << "\n  swiftlet: " << escaped(ours[i])
                    << "\n  jinja:    " << escaped(expected);
  }
  EXPECT_EQ(mismatches, 0) << "of " << ours.size() << " renderings";
}

class Qwen3JinjaParity : public testing::JinjaOracleTest {};
class Llama3JinjaParity : public testing::JinjaOracleTest {};

TEST_F(Qwen3JinjaParity, FixedConversationsAllOptions) {
  expect_parity("qwen3", testing::kQwen3Package, testing::fixed_conversations(true),
                option_grid(/*vary_thinking=*/true));
}

TEST_F(Qwen3JinjaParity, RandomConversations) {
  expect_parity("qwen3", testing::kQwen3Package, testing::random_conversations(7, 300, true),
                option_grid(/*vary_thinking=*/true));
}

TEST_F(Llama3JinjaParity, FixedConversations) {
  expect_parity("llama3", testing::kLlama3Package, testing::fixed_conversations(false),
                option_grid(/*vary_thinking=*/false));
}

TEST_F(Llama3JinjaParity, RandomConversations) {
  expect_parity("llama3", testing::kLlama3Package, testing::random_conversations(11, 300, false),
                option_grid(/*vary_thinking=*/false));
}

// The packaged templates are the ones detect() is meant to recognise.
TEST_F(Qwen3JinjaParity, DetectRecognisesThePackagedTemplates) {
  EXPECT_EQ(ChatTemplate::detect("qwen3", testing::package_chat_template(testing::kQwen3Package)),
            "qwen3");
  EXPECT_EQ(ChatTemplate::detect("", testing::package_chat_template(testing::kQwen3Package)),
            "qwen3");
  EXPECT_EQ(ChatTemplate::detect("llama", testing::package_chat_template(testing::kLlama3Package)),
            "llama3");
  EXPECT_EQ(ChatTemplate::detect("", testing::package_chat_template(testing::kLlama3Package)),
            "llama3");
}

}  // namespace
}  // namespace swiftlet
