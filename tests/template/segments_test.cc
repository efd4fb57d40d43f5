// render_segments: the text pieces of a training conversation and which carry loss, written out
// by hand from ms-swift's default loss_scale (replies + end-of-turn trained; system/user turns,
// assistant headers and Qwen3's empty think block not), and the invariant that the pieces
// concatenate to the rendered conversation for every template and conversation.
#include <gtest/gtest.h>

#include "core/error.h"
#include "template/chat_template.h"
#include "template/conversations.h"

namespace swiftlet {
namespace {

using testing::bot;
using testing::sys;
using testing::usr;
using Segments = std::vector<TemplateSegment>;

std::string show(const Segments& segments) {
  std::string s;
  for (const auto& seg : segments) {
    std::string text;
    for (char c : seg.text) text += c == '\n' ? std::string("\\n") : std::string(1, c);
    s += (seg.loss ? "  [loss] " : "  [ -- ] ") + text + "\n";
  }
  return s;
}

void expect_segments(const ChatTemplate& t, const std::vector<ChatMessage>& row,
                     const Segments& expected, const TemplateOptions& options = {}) {
  const Segments got = t.render_segments(row, options);
  EXPECT_EQ(got, expected) << t.name() << "\n got:\n"
                           << show(got) << " expected:\n"
                           << show(expected);
}

constexpr bool kLoss = true, kNoLoss = false;

TEST(TemplateSegments, Qwen3AddsAnUntrainedEmptyThinkBlockToAReplyWithoutReasoning) {
  const ChatTemplate t = ChatTemplate::by_name("qwen3");
  expect_segments(
      t, {usr("q"), bot("a")},
      {{"<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", kNoLoss},
       {"a<|im_end|>\n", kLoss}});
  // ms-swift's `^<think>\s*</think>\s*` also takes whitespace that starts the reply.
  expect_segments(
      t, {usr("q"), bot("  a")},
      {{"<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n  ", kNoLoss},
       {"a<|im_end|>\n", kLoss}});
  // An explicit empty block in the text is the same block.
  expect_segments(t, {usr("q"), bot("<think>\n\n</think>\n\na")},
                  t.render_segments({usr("q"), bot("a")}));
}

TEST(TemplateSegments, Qwen3TrainsReasoningOfTheLastTurn) {
  const ChatTemplate t = ChatTemplate::by_name("qwen3");
  expect_segments(t, {usr("q"), bot("a", "r")},
                  {{"<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n", kNoLoss},
                   {"<think>\nr\n</think>\n\na<|im_end|>\n", kLoss}});
  expect_segments(t, {usr("q"), bot("<think>\nr\n</think>\n\na")},
                  t.render_segments({usr("q"), bot("a", "r")}));
}

TEST(TemplateSegments, Qwen3MultiTurnStripsHistoryThinkingAndTrainsEveryReply) {
  const ChatTemplate t = ChatTemplate::by_name("qwen3");
  expect_segments(
      t, {sys("S"), usr("q1"), bot("<think>\nr1\n</think>\n\na1"), usr("q2"), bot("a2")},
      {{"<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n",
        kNoLoss},
       {"a1<|im_end|>\n", kLoss},
       {"<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", kNoLoss},
       {"a2<|im_end|>\n", kLoss}});
  // A conversation that ends with the user still trains the replies before.
  expect_segments(t, {usr("q1"), bot("a1"), usr("q2")},
                  {{"<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n", kNoLoss},
                   {"a1<|im_end|>\n", kLoss},
                   {"<|im_start|>user\nq2<|im_end|>\n", kNoLoss}});
}

TEST(TemplateSegments, EndOfTurnIsTrainedAfterATrainedTokenOrAtTheEnd) {
  const ChatTemplate t = ChatTemplate::by_name("qwen3");
  // An empty history reply has no trained token, so its separator is not trained (ms-swift's
  // dynamic-eos rule); the final suffix always is.
  expect_segments(
      t, {usr("q1"), bot(""), usr("q2"), bot("")},
      {{"<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
        "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
        kNoLoss},
       {"<|im_end|>\n", kLoss}});
}

TEST(TemplateSegments, Qwen3PreserveThinkingKeepsHistoryBlocks) {
  const ChatTemplate t = ChatTemplate::by_name("qwen3");
  TemplateOptions o;
  o.preserve_thinking = true;
  expect_segments(
      t, {usr("q1"), bot("a1"), usr("q2"), bot("a2", "r2")},
      {{"<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", kNoLoss},
       {"a1<|im_end|>\n", kLoss},
       {"<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n", kNoLoss},
       {"<think>\nr2\n</think>\n\na2<|im_end|>\n", kLoss}},
      o);
}

TEST(TemplateSegments, Qwen3ThinkingTrainsItsWholeReply) {
  // Not a hybrid template: ms-swift adds no ignore_empty_think, so nothing of the reply is masked.
  expect_segments(ChatTemplate::by_name("qwen3_thinking"), {usr("q"), bot("a")},
                  {{"<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n", kNoLoss},
                   {"<think>\n\n</think>\n\na<|im_end|>\n", kLoss}});
}

TEST(TemplateSegments, ChatmlFamily) {
  const std::string qwen_system =
      "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
      "assistant.<|im_end|>\n";
  expect_segments(
      ChatTemplate::by_name("qwen2_5"), {usr("q"), bot("a"), usr("q2"), bot("b")},
      {{qwen_system + "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n", kNoLoss},
       {"a<|im_end|>\n", kLoss},
       {"<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n", kNoLoss},
       {"b<|im_end|>\n", kLoss}});
  expect_segments(ChatTemplate::by_name("chatml"), {usr("q"), bot("one"), bot("two")},
                  {{"<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n", kNoLoss},
                   {"one<|im_end|>\n", kLoss},
                   {"<|im_start|>assistant\n", kNoLoss},
                   {"two<|im_end|>\n", kLoss}});
  expect_segments(ChatTemplate::by_name("qwen3_nothinking"), {usr("q"), bot("<think></think>a")},
                  {{"<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n", kNoLoss},
                   {"<think></think>a<|im_end|>\n", kLoss}});
}

TEST(TemplateSegments, Llama3) {
  const std::string bos = "<|begin_of_text|>";
  const std::string user = "<|start_header_id|>user<|end_header_id|>\n\n";
  const std::string assistant = "<|start_header_id|>assistant<|end_header_id|>\n\n";
  expect_segments(ChatTemplate::by_name("llama3"), {sys("S"), usr("Hi "), bot(" Hello ")},
                  {{bos + "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>" + user +
                        "Hi<|eot_id|>" + assistant,
                    kNoLoss},
                   {"Hello<|eot_id|>", kLoss}});
  expect_segments(ChatTemplate::by_name("llama3"), {usr("a"), bot("b"), usr("c"), bot("d")},
                  {{bos + user + "a<|eot_id|>" + assistant, kNoLoss},
                   {"b<|eot_id|>", kLoss},
                   {user + "c<|eot_id|>" + assistant, kNoLoss},
                   {"d<|eot_id|>", kLoss}});
  TemplateOptions dated;
  dated.date_string = "26 Jul 2024";
  expect_segments(ChatTemplate::by_name("llama3_2"), {usr("a"), bot("b")},
                  {{bos +
                        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
                        "December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" +
                        user + "a<|eot_id|>" + assistant,
                    kNoLoss},
                   {"b<|eot_id|>", kLoss}},
                  dated);
}

TEST(TemplateSegments, DefaultAndPlain) {
  // default: the "\n\n" separator is not eos, so it stays untrained (ms-swift's suffix is eos).
  expect_segments(
      ChatTemplate::by_name("default", {"<s>", "</s>"}), {usr("a"), bot("b"), usr("c"), bot("d")},
      {{"<s>You are a helpful assistant.\n\n### Human:\na\n\n### Assistant:\n", kNoLoss},
       {"b", kLoss},
       {"\n\n### Human:\nc\n\n### Assistant:\n", kNoLoss},
       {"d</s>", kLoss}});
  const ChatTemplate plain = ChatTemplate::by_name("plain", {"", "<|endoftext|>"});
  expect_segments(plain, {bot("Raw text.")}, {{"Raw text.<|endoftext|>", kLoss}});
  expect_segments(plain, {usr("Once upon"), bot(" a time")},
                  {{"Once upon", kNoLoss}, {" a time<|endoftext|>", kLoss}});
}

// For every template and conversation: the pieces are non-empty, alternate in flag and join to
// render() without generation prompt; a conversation one rejects, the other rejects too.
TEST(TemplateSegments, ConcatenationEqualsTheRenderedConversation) {
  std::vector<testing::Conversation> conversations = testing::fixed_conversations(true);
  for (auto& c : testing::random_conversations(3, 150, true)) conversations.push_back(c);
  TemplateOptions options;
  options.add_generation_prompt = false;
  options.date_string = "02 Feb 2025";
  int checked = 0, rejected = 0;
  for (const std::string& name : ChatTemplate::known_names()) {
    const ChatTemplate t = ChatTemplate::by_name(name, {"<bos>", "<eos>"});
    TemplateOptions o = options;
    if (name != "llama3_2") o.date_string.reset();
    for (const auto& c : conversations) {
      std::string rendered, render_error, segments_error;
      Segments segments;
      try {
        rendered = t.render(c.messages, o);
      } catch (const Error& e) {
        render_error = e.what();
      }
      try {
        segments = t.render_segments(c.messages, o);
      } catch (const Error& e) {
        segments_error = e.what();
      }
      ASSERT_EQ(render_error, segments_error) << name << " | " << c.name;
      if (!render_error.empty()) {
        ++rejected;
        continue;
      }
      std::string joined;
      for (size_t i = 0; i < segments.size(); ++i) {
        EXPECT_FALSE(segments[i].text.empty()) << name << " | " << c.name;
        if (i > 0) {
          EXPECT_NE(segments[i].loss, segments[i - 1].loss) << name << " | " << c.name;
        }
        joined += segments[i].text;
      }
      EXPECT_EQ(joined, rendered) << name << " | " << c.name;
      ++checked;
    }
  }
  // Rejections are reasoning on non-thinking templates and plain's one-round limit.
  EXPECT_GT(checked, 1000);
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace swiftlet
