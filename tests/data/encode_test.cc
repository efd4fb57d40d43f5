// encode_conversation: whole-text tokenization with loss flags mapped through byte offsets, the
// per-piece fallback when normalization changes the text, labels[0], and the truncation
// strategies, on hand-written rows with ids from Hugging Face's tokenizer.
#include "data/encode.h"

#include <gtest/gtest.h>

#include <map>

#include "data/data_fixture.h"

namespace swiftlet {
namespace {

using testing::qwen3_tokenizer;
using testing::show_tokens;

constexpr int32_t I = -100;

Conversation qa(const std::string& q, const std::string& a) {
  return {{{"user", q, ""}, {"assistant", a, ""}}};
}

class DataEncode : public ::testing::Test {
 protected:
  void SetUp() override { SWIFTLET_REQUIRE_QWEN3_TOKENIZER(); }
  const ChatTemplate nothink = ChatTemplate::by_name("qwen3_nothinking");
};

TEST_F(DataEncode, ArithmeticRowIdsAndMask) {
  const EncodedRow r =
      encode_conversation(qwen3_tokenizer(), nothink, qa("What is 23 + 58?", "81"), {});
  ASSERT_EQ(r.samples.size(), 1u);
  const std::vector<int32_t> ids = {151644, 872, 198, 3838, 374,    220,    17,  18,
                                    488,    220, 20,  23,   30,     151645, 198, 151644,
                                    77091,  198, 23,  16,   151645, 198};
  std::vector<int32_t> labels(ids.size(), I);
  for (size_t i = 18; i < ids.size(); ++i) labels[i] = ids[i];  // "8" "1" <|im_end|> "\n"
  EXPECT_EQ(r.samples[0].input_ids, ids);
  EXPECT_EQ(r.samples[0].labels, labels)
      << show_tokens(qwen3_tokenizer(), r.samples[0].input_ids, r.samples[0].labels);
  EXPECT_EQ(r.length, 22);
  EXPECT_FALSE(r.over_length || r.no_trained_token || r.per_segment);
}

TEST_F(DataEncode, ATokenAcrossAPieceBoundaryIsTrainedAndPiecewiseTokenizationWouldDiffer) {
  // "assistant\n" (untrained) + "\nHi" (trained): the whole text has one "\n\n" token (271).
  const auto pieces = training_segments(nothink, qa("q", "\nHi"), {});
  std::vector<int32_t> joined, joined_labels, piecewise, piecewise_labels;
  ASSERT_TRUE(tokenize_joined(qwen3_tokenizer(), pieces, joined, joined_labels));
  tokenize_per_segment(qwen3_tokenizer(), pieces, piecewise, piecewise_labels);
  EXPECT_EQ(joined, (std::vector<int32_t>{151644, 872, 198, 80, 151645, 198, 151644, 77091, 271,
                                          13048, 151645, 198}));
  EXPECT_EQ(joined_labels, (std::vector<int32_t>{I, I, I, I, I, I, I, I, 271, 13048, 151645, 198}));
  EXPECT_EQ(piecewise, (std::vector<int32_t>{151644, 872, 198, 80, 151645, 198, 151644, 77091, 198,
                                             198, 13048, 151645, 198}));
  EXPECT_EQ(
      encode_conversation(qwen3_tokenizer(), nothink, qa("q", "\nHi"), {}).samples[0].input_ids,
      joined);
}

TEST_F(DataEncode, TextThatNormalizationChangesIsTokenizedPieceByPiece) {
  // "Cafe\u0301" becomes "Café" under NFC: byte offsets no longer match the rendered text.
  const EncodedRow r = encode_conversation(qwen3_tokenizer(), nothink, qa("q", "Cafe\u0301"), {});
  ASSERT_EQ(r.samples.size(), 1u);
  EXPECT_TRUE(r.per_segment);
  const std::vector<int32_t> ids = {151644, 872, 198, 80,   151645, 198,    151644,
                                    77091,  198, 34,  2577, 963,    151645, 198};
  EXPECT_EQ(r.samples[0].input_ids, ids);
  EXPECT_EQ(r.samples[0].labels,
            (std::vector<int32_t>{I, I, I, I, I, I, I, I, I, 34, 2577, 963, 151645, 198}));
}

TEST_F(DataEncode, LossScaleAllTrainsEverythingButTheFirstToken) {
  EncodeSettings s;
  s.loss_all = true;
  const EncodedRow r = encode_conversation(qwen3_tokenizer(), nothink, qa("q", "Hi"), s);
  ASSERT_EQ(r.samples.size(), 1u);
  std::vector<int32_t> labels = r.samples[0].input_ids;
  labels[0] = I;
  EXPECT_EQ(r.samples[0].labels, labels);
}

// The arithmetic row is 22 tokens; its reply "81<|im_end|>\n" is the last 4.
TEST_F(DataEncode, TruncationStrategies) {
  const Conversation row = qa("What is 23 + 58?", "81");
  const std::vector<int32_t> full =
      encode_conversation(qwen3_tokenizer(), nothink, row, {}).samples[0].input_ids;
  EncodeSettings s;
  s.max_length = 10;
  s.truncation_strategy = "delete";
  EncodedRow r = encode_conversation(qwen3_tokenizer(), nothink, row, s);
  EXPECT_TRUE(r.over_length);
  EXPECT_TRUE(r.samples.empty());
  EXPECT_EQ(r.length, 22);

  s.truncation_strategy = "left";  // keeps the last 10 tokens, the reply among them
  r = encode_conversation(qwen3_tokenizer(), nothink, row, s);
  ASSERT_EQ(r.samples.size(), 1u);
  EXPECT_EQ(r.samples[0].input_ids, std::vector<int32_t>(full.end() - 10, full.end()));
  EXPECT_EQ(r.samples[0].labels, (std::vector<int32_t>{I, I, I, I, I, I, 23, 16, 151645, 198}));

  s.truncation_strategy = "right";  // keeps the first 10: no reply left, the row is dropped
  r = encode_conversation(qwen3_tokenizer(), nothink, row, s);
  EXPECT_TRUE(r.over_length && r.no_trained_token && r.samples.empty());
  s.max_length = 20;  // keeps "8" "1" of the reply
  r = encode_conversation(qwen3_tokenizer(), nothink, row, s);
  ASSERT_EQ(r.samples.size(), 1u);
  EXPECT_EQ(r.samples[0].input_ids, std::vector<int32_t>(full.begin(), full.begin() + 20));
  EXPECT_EQ(r.samples[0].labels.back(), 16);
  EXPECT_EQ(r.samples[0].labels[18], 23);

  // split (pre-training): pieces of max_length, each starting untrained; pieces without a
  // trained token are left out.
  EncodeSettings pt;
  pt.loss_all = true;
  pt.max_length = 8;
  pt.truncation_strategy = "split";
  r = encode_conversation(qwen3_tokenizer(), nothink, row, pt);
  ASSERT_EQ(r.samples.size(), 3u);  // 8 + 8 + 6
  for (size_t k = 0; k < 3; ++k) {
    const auto begin = full.begin() + long(8 * k);
    const auto end = full.begin() + long(std::min<size_t>(full.size(), 8 * (k + 1)));
    EXPECT_EQ(r.samples[k].input_ids, std::vector<int32_t>(begin, end));
    EXPECT_EQ(r.samples[k].labels[0], I);
    EXPECT_EQ(std::vector<int32_t>(r.samples[k].labels.begin() + 1, r.samples[k].labels.end()),
              std::vector<int32_t>(begin + 1, end));
  }
}

TEST_F(DataEncode, ARowWithoutAReplyHasNothingToTrain) {
  const EncodedRow r =
      encode_conversation(qwen3_tokenizer(), nothink, {{{"user", "only a question", ""}}}, {});
  EXPECT_TRUE(r.no_trained_token);
  EXPECT_TRUE(r.samples.empty());
}

TEST_F(DataEncode, TemplateErrorsPropagate) {
  // The plain template (pt) has no system prompt and one turn.
  const ChatTemplate plain = ChatTemplate::by_name("plain", {"", "<|im_end|>"});
  EXPECT_ERROR_HAS(
      encode_conversation(
          qwen3_tokenizer(), plain,
          {{{"user", "a", ""}, {"assistant", "b", ""}, {"user", "c", ""}, {"assistant", "d", ""}}},
          {}),
      "renders one text and one reply");
}

// --loss_scale last_round (rlhf): only the final reply and its end-of-turn stay trained, on every
// template family; a conversation that ends with the user trains nothing.
TEST(DataEncodeLastRound, OnlyTheFinalReplyAndItsEndOfTurnAreTrained) {
  const Conversation two_rounds = {
      {{"user", "A", ""}, {"assistant", "B", ""}, {"user", "C", ""}, {"assistant", "D", ""}}};
  EncodeSettings s;
  s.last_round = true;
  const std::map<std::string, std::string> expected = {
      {"qwen3_nothinking", "D<|im_end|>\n"},
      {"qwen3", "D<|im_end|>\n"},  // after an untrained empty think block
      {"llama3", "D<|eot_id|>"},
      {"default", "D</s>"},
  };
  for (const auto& [name, final_reply] : expected) {
    const ChatTemplate t = ChatTemplate::by_name(name, {"", "</s>"});
    std::string trained, all;
    for (const TemplateSegment& p : training_segments(t, two_rounds, s)) {
      if (p.loss) trained += p.text;
      all += p.text;
    }
    EXPECT_EQ(trained, final_reply) << name;
    EXPECT_EQ(all, t.render(two_rounds.messages, {.add_generation_prompt = false})) << name;
  }
  const Conversation open = {{{"user", "A", ""}, {"assistant", "B", ""}, {"user", "C", ""}}};
  for (const TemplateSegment& p :
       training_segments(ChatTemplate::by_name("qwen3_nothinking"), open, s))
    EXPECT_FALSE(p.loss) << p.text;
}

}  // namespace
}  // namespace swiftlet
