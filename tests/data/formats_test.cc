// Golden tests: one row of each dataset format ms-swift accepts, through load_datasets with the
// real Qwen3 tokenizer and its detected template (qwen3), against ids written out by hand from
// Hugging Face's tokenizer (@huggingface/tokenizers) and the loss mask of ms-swift's default
// loss_scale, token by token ('#' trained, '.' not).
#include <gtest/gtest.h>

#include "data/data_fixture.h"
#include "data/dataset.h"

namespace swiftlet {
namespace {

using testing::qwen3_tokenizer;
using testing::qwen3_tokenizer_dir;
using testing::show_tokens;
using testing::TempDir;
using testing::write_text;

constexpr int32_t kImStart = 151644, kImEnd = 151645, kNl = 198, kUser = 872, kAssistant = 77091,
                  kThink = 151667, kEndThink = 151668, kNlNl = 271, kSystem = 8948;

void expect_sample(const TokenizedSample& s, const std::vector<int32_t>& ids,
                   const std::string& mask) {
  ASSERT_EQ(ids.size(), mask.size()) << "bad test: ids and mask differ in length";
  std::vector<int32_t> labels;
  for (size_t i = 0; i < ids.size(); ++i) labels.push_back(mask[i] == '#' ? ids[i] : -100);
  EXPECT_EQ(s.input_ids, ids) << "got:      "
                              << show_tokens(qwen3_tokenizer(), s.input_ids, s.labels)
                              << "\nexpected: " << show_tokens(qwen3_tokenizer(), ids, labels);
  EXPECT_EQ(s.labels, labels) << "got:      "
                              << show_tokens(qwen3_tokenizer(), s.input_ids, s.labels)
                              << "\nexpected: " << show_tokens(qwen3_tokenizer(), ids, labels);
  EXPECT_TRUE(s.packed_lengths.empty());
}

// Loads one file holding `content` and returns its single training sample.
TokenizedSample load_one(const std::string& name, const std::string& content, DataArgs a = {}) {
  TempDir dir;
  write_text(dir / name, content);
  a.dataset = {dir / name};
  a.load_from_cache_file = false;
  DatasetBundle b = load_datasets(a, qwen3_tokenizer_dir());
  EXPECT_EQ(b.train.size(), 1u);
  return b.train.empty() ? TokenizedSample{} : b.train[0];
}

// "<|im_start|>user\n" + ... pieces reused below.
std::vector<int32_t> cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
const std::vector<int32_t> kUserHead = {kImStart, kUser, kNl};
const std::vector<int32_t> kTurnEnd = {kImEnd, kNl};
// "<|im_start|>assistant\n<think>\n\n</think>\n\n": ms-swift's empty think block, not trained.
const std::vector<int32_t> kBotHead = {kImStart, kAssistant, kNl, kThink, kNlNl, kEndThink, kNlNl};

class DataFormats : public ::testing::Test {
 protected:
  void SetUp() override { SWIFTLET_REQUIRE_QWEN3_TOKENIZER(); }
};

TEST_F(DataFormats, OpenAiMessagesMultiTurnTrainsEveryReplyAndItsEndOfTurn) {
  // system "Be terse." / "2+2?" -> "4" / "times 3?" -> "12"
  const auto s = load_one(
      "m.jsonl",
      R"({"messages": [{"role": "system", "content": "Be terse."}, )"
      R"({"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, )"
      R"({"role": "user", "content": "times 3?"}, {"role": "assistant", "content": "12"}]})"
      "\n");
  const std::vector<int32_t> ids = cat({{kImStart, kSystem, kNl, 3430, 50537, 13},
                                        kTurnEnd,
                                        kUserHead,
                                        {17, 10, 17, 30},
                                        kTurnEnd,
                                        kBotHead,
                                        {19},
                                        kTurnEnd,
                                        kUserHead,
                                        {15136, 220, 18, 30},
                                        kTurnEnd,
                                        kBotHead,
                                        {16, 17},
                                        kTurnEnd});
  expect_sample(s, ids, std::string(24, '.') + "###" + std::string(16, '.') + "####");
}

TEST_F(DataFormats, SystemColumnWithHumanAssistantPairs) {
  const auto s =
      load_one("c.jsonl",
               R"({"system": "Be terse.", "conversation": [{"human": "2+2?", "assistant": "4"}]})");
  const std::vector<int32_t> ids = cat({{kImStart, kSystem, kNl, 3430, 50537, 13},
                                        kTurnEnd,
                                        kUserHead,
                                        {17, 10, 17, 30},
                                        kTurnEnd,
                                        kBotHead,
                                        {19},
                                        kTurnEnd});
  expect_sample(s, ids, std::string(24, '.') + "###");
}

TEST_F(DataFormats, ShareGptFromValue) {
  const auto s = load_one(
      "s.json",
      R"([{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}])");
  const std::vector<int32_t> ids =
      cat({kUserHead, {13048}, kTurnEnd, kBotHead, {9707, 0}, kTurnEnd});
  expect_sample(s, ids, std::string(13, '.') + "####");
}

const std::vector<int32_t> kAlpacaIds =
    cat({kUserHead, {27473, 311, 8585, kNl, 4616}, kTurnEnd, kBotHead, {9686}, kTurnEnd});
const std::string kAlpacaMask = std::string(17, '.') + "###";

TEST_F(DataFormats, AlpacaJoinsInstructionAndInput) {
  const auto s = load_one(
      "a.jsonl", R"({"instruction": "Translate to French", "input": "cat", "output": "chat"})");
  expect_sample(s, kAlpacaIds, kAlpacaMask);
}

TEST_F(DataFormats, AlpacaFromCsvWithQuotedCells) {
  const auto s =
      load_one("a.csv", "instruction,input,output\n\"Translate to French\",cat,\"chat\"\n");
  expect_sample(s, kAlpacaIds, kAlpacaMask);
}

TEST_F(DataFormats, QueryResponseHistory) {
  const auto s = load_one(
      "q.jsonl",
      R"({"query": "capital of Peru?", "response": "Lima", "history": [["hi", "hello"]]})");
  const std::vector<int32_t> ids = cat({kUserHead,
                                        {6023},
                                        kTurnEnd,
                                        kBotHead,
                                        {14990},
                                        kTurnEnd,
                                        kUserHead,
                                        {65063, 315, 47747, 30},
                                        kTurnEnd,
                                        kBotHead,
                                        {43, 7523},
                                        kTurnEnd});
  expect_sample(s, ids, std::string(13, '.') + "###" + std::string(16, '.') + "####");
}

TEST_F(DataFormats, ColumnAliasesAndColumnsRenaming) {
  // "question"/"answer" are ms-swift aliases of query/response; --columns renames others.
  const auto a = load_one("q.jsonl", R"({"question": "hi", "answer": "hello", "history": []})");
  DataArgs renamed;
  renamed.columns = {{"q", "query"}, {"a", "response"}};
  const auto b = load_one("q.jsonl", R"({"q": "hi", "a": "hello"})", renamed);
  const std::vector<int32_t> ids = cat({kUserHead, {6023}, kTurnEnd, kBotHead, {14990}, kTurnEnd});
  expect_sample(a, ids, std::string(13, '.') + "###");
  expect_sample(b, ids, std::string(13, '.') + "###");
}

TEST_F(DataFormats, TextRowUnderAChatTemplateGetsAnEmptyUserTurn) {
  const auto s = load_one("t.jsonl", R"({"text": "Raw text."})");
  const std::vector<int32_t> ids =
      cat({kUserHead, kTurnEnd, kBotHead, {20015, 1467, 13}, kTurnEnd});
  expect_sample(s, ids, std::string(12, '.') + "#####");
}

TEST_F(DataFormats, PretrainingTrainsEveryTokenAndEndsWithEos) {
  // swiftlet pt: --use_chat_template false --loss_scale all; Qwen3 has no BOS, eos <|im_end|>.
  DataArgs pt;
  pt.use_chat_template = false;
  pt.loss_scale = "all";
  const std::vector<int32_t> ids = {20015, 855, 85370, 14311, 13, kImEnd};
  expect_sample(load_one("p.txt", "Raw pre-training paragraph.\n\n", pt), ids, ".#####");
  expect_sample(
      load_one("p.jsonl",
               R"({"messages": [{"role": "assistant", "content": "Raw pre-training paragraph."}]})",
               pt),
      ids, ".#####");
}

TEST_F(DataFormats, SystemPriorityRowThenFlagThenTemplateDefault) {
  // qwen2_5 has a default system prompt; --system replaces it; a row's own system wins.
  DataArgs a;
  a.template_name = "qwen2_5";
  const std::string row = R"({"query": "hi", "response": "hello"})";
  const std::string own = R"({"system": "Own.", "query": "hi", "response": "hello"})";
  auto text = [&](const TokenizedSample& s) { return qwen3_tokenizer().decode(s.input_ids); };
  EXPECT_EQ(text(load_one("r.jsonl", row, a)),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|"
            "im_end|>\n");
  a.system = "Flag\\nprompt.";  // "\n" escapes are expanded
  EXPECT_EQ(text(load_one("r.jsonl", row, a)),
            "<|im_start|>system\nFlag\nprompt.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
            "<|im_start|>assistant\nhello<|im_end|>\n");
  EXPECT_EQ(text(load_one("r.jsonl", own, a)),
            "<|im_start|>system\nOwn.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
            "<|im_start|>assistant\nhello<|im_end|>\n");
  // An empty row system removes the system turn, as --system '' does.
  EXPECT_EQ(text(load_one("r.jsonl", R"({"system": "", "query": "hi", "response": "hello"})", a)),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n");
}

TEST_F(DataFormats, ConsecutiveSameRoleMessagesAreMergedAsMsSwiftDoes) {
  DataArgs a;
  a.template_name = "qwen3_nothinking";
  const auto s = load_one(
      "m.jsonl",
      R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, )"
      R"({"role": "assistant", "content": "c"}, {"role": "assistant", "content": "d"}]})",
      a);
  EXPECT_EQ(qwen3_tokenizer().decode(s.input_ids),
            "<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\ncd<|im_end|>\n");
}

TEST_F(DataFormats, PreserveThinkingFalseDropsHistoryThinkBlocksLikeTheJinjaTemplate) {
  const std::string row =
      R"({"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}, )"
      R"({"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]})";
  DataArgs a;
  a.preserve_thinking = false;
  EXPECT_EQ(qwen3_tokenizer().decode(load_one("m.jsonl", row, a).input_ids),
            "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n<|im_start|>"
            "user\nq2<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\na2<|im_end|>\n");
  EXPECT_EQ(
      qwen3_tokenizer().decode(load_one("m.jsonl", row).input_ids),
      "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\na1<|im_end|>\n"
      "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</"
      "think>\n\na2<|im_end|>\n");
}

}  // namespace
}  // namespace swiftlet
