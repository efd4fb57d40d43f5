#include "cli/flags.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace swiftlet::cli {

namespace {
Flags make() {
  return Flags("sft", {{"model", FlagKind::kString, "", "model folder"},
                       {"lora_rank", FlagKind::kInt, "8", "rank"},
                       {"learning_rate", FlagKind::kFloat, "1e-4", "lr"},
                       {"stream", FlagKind::kBool, "false", "stream"},
                       {"dataset", FlagKind::kList, "", "datasets"},
                       {"tuner_type", FlagKind::kString, "lora", "tuner", {"train_type"}}});
}
bool parse(Flags& f, std::vector<std::string> args) {
  std::vector<char*> argv{const_cast<char*>("swiftlet"), const_cast<char*>("sft")};
  for (auto& a : args) argv.push_back(a.data());
  return f.parse(int(argv.size()), argv.data());
}
}  // namespace

TEST(Flags, ParsesKindsDefaultsAndAliases) {
  Flags f = make();
  ASSERT_TRUE(parse(f, {"--model", "m", "--dataset", "a.jsonl", "b.jsonl#5", "--lora-rank=16",
                        "--train_type", "full", "--stream"}));
  EXPECT_EQ(f.str("model"), "m");
  EXPECT_EQ(f.i64("lora_rank"), 16);
  EXPECT_DOUBLE_EQ(f.f64("learning_rate"), 1e-4);
  EXPECT_EQ(f.list("dataset"), (std::vector<std::string>{"a.jsonl", "b.jsonl#5"}));
  EXPECT_EQ(f.str("tuner_type"), "full");
  EXPECT_TRUE(f.boolean("stream"));
  EXPECT_FALSE(f.given("learning_rate"));
}

TEST(Flags, UnknownFlagSuggestsNearest) {
  Flags f = make();
  try {
    parse(f, {"--lora_rnak", "4"});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unknown flag --lora_rnak for swiftlet sft");
    EXPECT_EQ(e.hint(), "did you mean --lora_rank?");
  }
}

TEST(Flags, BadValuesNameTheFlag) {
  Flags f = make();
  EXPECT_THROW(parse(f, {"--lora_rank", "eight"}), Error);
  Flags g = make();
  EXPECT_THROW(parse(g, {"--stream", "maybe"}), Error);
  Flags h = make();
  EXPECT_FALSE(parse(h, {"--help"}));
}

}  // namespace swiftlet::cli
