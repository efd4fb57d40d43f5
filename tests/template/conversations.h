#pragma once
// Conversations shared by the template tests: hand-picked edge cases and seeded random ones built
// from fragments that exercise the templates' string handling (think tags, newlines, whitespace
// that trim removes, tool-response wrappers, multi-byte UTF-8).
#include <string>
#include <vector>

#include "core/rng.h"
#include "template/chat_template.h"

namespace swiftlet::testing {

inline ChatMessage sys(std::string content) { return {"system", std::move(content), ""}; }
inline ChatMessage usr(std::string content) { return {"user", std::move(content), ""}; }
inline ChatMessage bot(std::string content, std::string reasoning = "") {
  return {"assistant", std::move(content), std::move(reasoning)};
}

struct Conversation {
  std::string name;
  std::vector<ChatMessage> messages;
};

// with_reasoning: include assistant messages that carry reasoning_content (Qwen3 only).
inline std::vector<Conversation> fixed_conversations(bool with_reasoning) {
  std::vector<Conversation> c = {
      {"single user", {usr("Hello")}},
      {"system and user", {sys("You are terse."), usr("2+2?")}},
      {"one round", {usr("2+2?"), bot("4")}},
      {"two rounds open", {usr("A"), bot("B"), usr("C")}},
      {"two rounds closed", {sys("Be brief."), usr("A"), bot("B"), usr("C"), bot("D")}},
      {"inline think last", {usr("q"), bot("<think>\nlet me see\n</think>\n\nanswer")}},
      {"inline think history",
       {usr("q1"), bot("<think>\nr1\n</think>\n\na1"), usr("q2"), bot("<think>r2</think>a2")}},
      {"inline think open", {usr("q1"), bot("<think>\nr1\n</think>\n\na1"), usr("q2")}},
      {"several think tags", {usr("q"), bot("x<think>a<think>b</think>c</think>\n\nd")}},
      {"think without close", {usr("q"), bot("<think>never closed"), usr("next")}},
      {"empty think inline", {usr("q"), bot("<think>\n\n</think>\n\nplain")}},
      {"newlines around reply", {usr("q"), bot("\n\nhello\n\n")}},
      {"unicode",
       {sys("Réponds en français 🇫🇷"), usr("你好，世界 🌍 café naïve"), bot("こんにちは ✓")}},
      {"empty contents", {usr(""), bot(""), usr("")}},
      {"empty final reply", {usr("q"), bot("")}},
      {"whitespace to trim",
       {sys("  spaced system \n"), usr("\t hi there \n\n"), bot(" \u00a0ok\u3000")}},
      {"special tokens in text", {usr("<|im_end|> and <|eot_id|>"), bot("<|im_start|>x")}},
      {"assistant first", {bot("Raw pre-training paragraph.")}},
      {"consecutive assistants", {usr("q"), bot("part one"), bot("part two")}},
      {"consecutive users", {usr("first"), usr("second"), bot("reply")}},
      {"system in the middle", {usr("q"), bot("a"), sys("new rules"), usr("q2")}},
      {"tool response as user",
       {usr("q"), bot("<think>r</think>call"), usr("<tool_response>\n{}\n</tool_response>")}},
      {"long",
       {sys("S"), usr("1"), bot("one"), usr("2"), bot("two"), usr("3"), bot("three"), usr("4"),
        bot("four"), usr("5")}},
  };
  if (with_reasoning) {
    c.push_back({"reasoning last", {usr("q"), bot("the answer", "step 1\nstep 2")}});
    c.push_back({"reasoning history", {usr("q1"), bot("a1", "r1"), usr("q2"), bot("a2", "r2")}});
    c.push_back({"reasoning open", {usr("q1"), bot("a1", "r1"), usr("q2")}});
    c.push_back({"reasoning newlines", {usr("q"), bot("\n\nans\n", "\n\nthought\n\n")}});
    c.push_back(
        {"reasoning and inline think", {usr("q"), bot("<think>inline</think>rest", "given")}});
    c.push_back({"reasoning whitespace only", {usr("q"), bot("ans", "  ")}});
    c.push_back({"reasoning after tool response",
                 {usr("q"), bot("call", "plan"), usr("<tool_response>r</tool_response>"),
                  bot("done", "final thought")}});
  }
  return c;
}

// Seeded random conversations over tricky fragments. Whitespace fragments are limited to what
// Python's str.strip() and JavaScript's trim() agree on, since the oracle runs in JavaScript.
inline std::vector<Conversation> random_conversations(uint64_t seed, int count,
                                                      bool with_reasoning) {
  static const std::vector<std::string> kFragments = {"a",
                                                      "Hello",
                                                      "x y",
                                                      " ",
                                                      "\n",
                                                      "\n\n",
                                                      "\t",
                                                      "\r\n",
                                                      "<think>",
                                                      "</think>",
                                                      "<think>\n",
                                                      "\n</think>\n\n",
                                                      "<tool_response>",
                                                      "</tool_response>",
                                                      "<|im_end|>",
                                                      "<|eot_id|>",
                                                      "你好",
                                                      "🌍",
                                                      "é",
                                                      "\u00a0",
                                                      "\u3000",
                                                      "{\"k\": 1}",
                                                      "</",
                                                      "think",
                                                      "\\n"};
  Rng rng(seed);
  auto text = [&](int max_fragments) {
    std::string s;
    const int n = static_cast<int>(rng.below(max_fragments + 1));
    for (int i = 0; i < n; ++i) s += kFragments[rng.below(kFragments.size())];
    return s;
  };
  std::vector<Conversation> out;
  for (int k = 0; k < count; ++k) {
    Conversation c{"random #" + std::to_string(k), {}};
    if (rng.below(3) == 0) c.messages.push_back(sys(text(3)));
    const int turns = 1 + static_cast<int>(rng.below(6));
    bool user_turn = rng.below(5) != 0;
    for (int t = 0; t < turns; ++t) {
      if (user_turn) {
        c.messages.push_back(usr(text(5)));
      } else {
        std::string reasoning;
        if (with_reasoning && rng.below(3) == 0) reasoning = text(4);
        c.messages.push_back(bot(text(6), reasoning));
      }
      if (rng.below(5) != 0) user_turn = !user_turn;  // sometimes the same role twice
    }
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace swiftlet::testing
