// Flags of init / export / tokenize / infer checked through the binary: each changes what it
// says it changes, or is refused with one line.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io/test_util.h"
#include "model/model_fixture.h"

namespace swiftlet {
namespace {

using testing::TempDir;
using testing::run_shell;

TEST(CliFlags, InitInitializerRangeSetsTheWeightSpread) {
  TempDir tmp;
  auto [rc, out] = run_shell(fmt::format("{} init --preset tiny --initializer_range 0.1 --tokenizer_dir {} --output_dir {}",
                                   SWIFTLET_BINARY, testing::qwen3_tokenizer_dir(), tmp / "m"),
                       tmp);
  ASSERT_EQ(rc, 0) << out;
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(tmp / "m/config.json"));
  EXPECT_DOUBLE_EQ(cfg["initializer_range"].get<double>(), 0.1);
  io::SafetensorsFile f = io::load_safetensors(tmp / "m/model.safetensors");
  const Tensor* w = f.find("model.layers.0.mlp.up_proj.weight");
  ASSERT_NE(w, nullptr);
  double sq = 0;
  for (int64_t i = 0; i < w->numel(); ++i) sq += double(w->item_f32(i)) * w->item_f32(i);
  EXPECT_NEAR(std::sqrt(sq / double(w->numel())), 0.1, 0.005);
  auto [rc2, out2] = run_shell(fmt::format("{} init --preset tiny --initializer_range -1 --tokenizer_dir {} --output_dir {}",
                                     SWIFTLET_BINARY, testing::qwen3_tokenizer_dir(), tmp / "n"),
                         tmp);
  EXPECT_NE(rc2, 0);
  EXPECT_NE(out2.find("--initializer_range must be positive"), std::string::npos) << out2;
}

TEST(CliFlags, ExportRefusesWhatItDoesNotDo) {
  TempDir tmp;
  for (const auto& [flags, needle] : std::vector<std::pair<std::string, std::string>>{
           {"--adapters x --merge_lora true --quant_method awq", "--quant_method awq is not supported"},
           {"--adapters x --merge_lora true --to_ollama true", "--to_ollama is not supported"},
           {"--adapters x --merge_lora true --push_to_hub true", "--push_to_hub is not available"},
           {"--adapters x", "nothing to export"},
           {"--adapters x y --merge_lora true", "exactly one adapter"}}) {
    auto [rc, out] = run_shell(fmt::format("{} export {}", SWIFTLET_BINARY, flags), tmp);
    EXPECT_NE(rc, 0) << flags;
    EXPECT_NE(out.find(needle), std::string::npos) << flags << ": " << out;
  }
}

TEST(CliFlags, TokenizeMessagesSystemAndGenerationPrompt) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  std::ofstream(tmp / "c.json") << R"([{"role": "user", "content": "Hi"}])";
  auto tokens = [&](const std::string& flags) {
    auto [rc, out] = run_shell(fmt::format("{} tokenize --model {} --messages {} {}", SWIFTLET_BINARY, model, tmp / "c.json", flags), tmp);
    EXPECT_EQ(rc, 0) << out;
    return out;
  };
  const std::string plain = tokens("");
  // No generation prompt: the last 3 ids (<|im_start|> assistant \n) are gone.
  EXPECT_EQ(tokens("--add_generation_prompt false"), "[151644,872,198,13048,151645,198]\n");
  // A system prompt adds its turn in front: <|im_start|> system \n ...
  const std::string sys = tokens("--system Be");
  EXPECT_EQ(sys.rfind("[151644,8948,198", 0), 0u) << sys;
  EXPECT_GT(sys.size(), plain.size());
  auto [rc, out] = run_shell(fmt::format("{} tokenize --model {} --messages {} --template nosuch", SWIFTLET_BINARY, model,
                                   tmp / "c.json"),
                       tmp);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("nosuch"), std::string::npos) << out;
}

TEST(CliFlags, InferSampleDtypeAndDevice) {
  const std::string model = testing::tiny_model("tiny");
  TempDir tmp;
  {
    std::ofstream f(tmp / "q.jsonl");
    for (int i = 0; i < 3; ++i) f << nlohmann::json{{"query", fmt::format("question {}", i)}}.dump() << "\n";
  }
  auto [rc, out] = run_shell(fmt::format("{} infer --model {} --val_dataset {} --val_dataset_sample 2 --result_path {} "
                                   "--max_new_tokens 2 --temperature 0 --torch_dtype float16",
                                   SWIFTLET_BINARY, model, tmp / "q.jsonl", tmp / "r.jsonl"),
                       tmp);
  ASSERT_EQ(rc, 0) << out;
  std::ifstream r(tmp / "r.jsonl");
  int rows = 0;
  for (std::string line; std::getline(r, line);) rows += !line.empty();
  EXPECT_EQ(rows, 2);
  auto [rc2, out2] = run_shell(fmt::format("{} infer --model {} --device sim:0 < /dev/null", SWIFTLET_BINARY, model), tmp);
  EXPECT_NE(rc2, 0);
  EXPECT_NE(out2.find("sim:0"), std::string::npos) << out2;
  auto [rc3, out3] = run_shell(fmt::format("{} infer --model {} --torch_dtype int8 < /dev/null", SWIFTLET_BINARY, model), tmp);
  EXPECT_NE(rc3, 0);
  EXPECT_NE(out3.find("--torch_dtype int8 is not supported"), std::string::npos) << out3;
}

}  // namespace
}  // namespace swiftlet
