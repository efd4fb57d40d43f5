// `swiftlet infer` through the binary: interactive chat (clear / exit), batch inference with
// logprobs, and one-line errors for bad flags.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "io/test_util.h"
#include "model/model_fixture.h"

namespace swiftlet {
namespace {

using testing::TempDir;
using testing::run_shell;

TEST(InferCli, InteractiveChatClearAndExit) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  auto [rc, out] = run_shell(fmt::format("printf 'hello\\nclear\\nhi there\\nexit\\nnever read\\n' | {} infer --model {} "
                                   "--max_new_tokens 5 --temperature 0 --stream true",
                                   SWIFTLET_BINARY, model),
                       tmp);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("(conversation cleared)"), std::string::npos) << out;
  size_t prompts = 0;
  for (size_t at = out.find("<<< "); at != std::string::npos; at = out.find("<<< ", at + 1)) ++prompts;
  EXPECT_EQ(prompts, 4u) << out;  // hello, clear, hi there, exit
  EXPECT_NE(out.find("(stopped at the token limit)"), std::string::npos) << out;
}

TEST(InferCli, BatchInferenceWritesResultsWithLogprobs) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  {
    std::ofstream f(tmp / "rows.jsonl");
    f << R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})" << "\n";
    f << R"({"query": "2+2?", "response": "4"})" << "\n";
    f << R"({"query": "no label here"})" << "\n";
  }
  const std::string cmd = fmt::format("{} infer --model {} --val_dataset {} --result_path {} --max_new_tokens 6 "
                                      "--temperature 0 --logprobs true --top_logprobs 3",
                                      SWIFTLET_BINARY, model, tmp / "rows.jsonl", tmp / "res.jsonl");
  auto [rc, out] = run_shell(cmd, tmp);
  ASSERT_EQ(rc, 0) << out;
  std::ifstream f(tmp / "res.jsonl");
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(f, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["labels"], "Hello");
  EXPECT_EQ(rows[0]["query"], "Hi");
  EXPECT_EQ(rows[1]["labels"], "4");
  EXPECT_FALSE(rows[2].contains("labels"));
  for (const auto& r : rows) {
    ASSERT_TRUE(r.contains("logprobs"));
    EXPECT_EQ(r["finish_reason"], "length");
    EXPECT_EQ(r["logprobs"].size(), 6u);
    for (const auto& lp : r["logprobs"]) {
      EXPECT_LE(lp["logprob"].get<double>(), 0.0);
      ASSERT_EQ(lp["top_logprobs"].size(), 3u);
      // greedy: the chosen token is the most likely one
      EXPECT_EQ(lp["top_logprobs"][0]["token_id"], lp["token_id"]);
    }
  }
  // Same seed, same answers; the file is appended to.
  auto [rc2, out2] = run_shell(cmd, tmp);
  ASSERT_EQ(rc2, 0) << out2;
  std::ifstream g(tmp / "res.jsonl");
  std::vector<nlohmann::json> again;
  for (std::string line; std::getline(g, line);) again.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(again.size(), 6u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(again[i + 3]["response"], rows[i]["response"]);
}

TEST(InferCli, BadFlagsAreOneLineErrors) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  auto [rc1, e1] = run_shell(fmt::format("{} infer --model {} --temprature 0 < /dev/null", SWIFTLET_BINARY, model), tmp);
  EXPECT_NE(rc1, 0);
  EXPECT_NE(e1.find("error: unknown flag --temprature for swiftlet infer"), std::string::npos) << e1;
  EXPECT_NE(e1.find("did you mean --temperature?"), std::string::npos) << e1;
  auto [rc2, e2] = run_shell(fmt::format("{} infer --model {} --top_p 2 < /dev/null", SWIFTLET_BINARY, model), tmp);
  EXPECT_NE(rc2, 0);
  EXPECT_NE(e2.find("--top_p must be in (0, 1]"), std::string::npos) << e2;
  auto [rc3, e3] = run_shell(fmt::format("{} infer --model {} --infer_backend vllm < /dev/null", SWIFTLET_BINARY, model), tmp);
  EXPECT_NE(rc3, 0);
  EXPECT_NE(e3.find("--infer_backend vllm is not available"), std::string::npos) << e3;
  auto [rc4, e4] = run_shell(fmt::format("{} infer --model Qwen/NoSuchModel-1B < /dev/null", SWIFTLET_BINARY), tmp);
  EXPECT_NE(rc4, 0);
  EXPECT_NE(e4.find("error:"), std::string::npos) << e4;
  EXPECT_NE(e4.find("download"), std::string::npos) << e4;
}

TEST(TokenizeCli, MessagesGoThroughTheChatTemplate) {
  const std::string model = testing::tiny_model("tiny");
  testing::TempDir tmp;
  {
    std::ofstream f(tmp / "c.json");
    f << R"([{"role": "user", "content": "Hi"}])";
  }
  auto [rc, out] = run_shell(fmt::format("{} tokenize --model {} --messages {}", SWIFTLET_BINARY, model, tmp / "c.json"), tmp);
  ASSERT_EQ(rc, 0) << out;
  // <|im_start|> user \n Hi <|im_end|> \n <|im_start|> assistant \n  (Qwen3's ids)
  EXPECT_EQ(out, "[151644,872,198,13048,151645,198,151644,77091,198]\n");
  auto [rc2, out2] = run_shell(fmt::format("{} tokenize --model {} --messages {} --enable_thinking false", SWIFTLET_BINARY,
                                     model, tmp / "c.json"),
                         tmp);
  ASSERT_EQ(rc2, 0) << out2;
  // ... then <think> \n\n </think> \n\n
  EXPECT_EQ(out2, "[151644,872,198,13048,151645,198,151644,77091,198,151667,271,151668,271]\n");
}

}  // namespace
}  // namespace swiftlet
