// Qwen3-MoE through the binary: init the tiny MoE preset, LoRA sft with the load-balancing loss
// (adapter keys per expert, aux_loss logged), full sft, export --merge_lora, and infer: the
// merged folder answers exactly as the base model with the adapter attached.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/test_util.h"
#include "model/model_fixture.h"

namespace swiftlet {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

int sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::string write_dataset(const TempDir& tmp) {
  const std::string path = tmp / "data.jsonl";
  std::ofstream f(path);
  const char* words[] = {"red", "blue", "green", "cat"};
  for (int i = 0; i < 8; ++i)
    f << nlohmann::json{{"messages",
                         {{{"role", "user"}, {"content", fmt::format("Say {}.", words[i % 4])}},
                          {{"role", "assistant"}, {"content", words[i % 4]}}}}}
             .dump()
      << "\n";
  return path;
}

std::vector<std::string> responses(const std::string& path) {
  std::vector<std::string> out;
  for (const auto& r : read_jsonl(path)) out.push_back(r["response"].get<std::string>());
  return out;
}

TEST(MoeCli, InitSftLoraMergeAndInfer) {
  TempDir tmp;
  const std::string model = tmp / "moe";
  ASSERT_EQ(
      sh(fmt::format("{} init --preset tiny-moe --tokenizer_dir {} --output_dir {} > {} 2>&1",
                     SWIFTLET_BINARY, testing::qwen3_tokenizer_dir(), model, tmp / "init.log")),
      0)
      << testing::read_bytes(tmp / "init.log");
  const nlohmann::json cfg = nlohmann::json::parse(testing::read_bytes(model + "/config.json"));
  EXPECT_EQ(cfg["architectures"][0], "Qwen3MoeForCausalLM");
  EXPECT_EQ(cfg["num_experts"], 4);
  const std::string data = write_dataset(tmp);
  const std::string sft = fmt::format(
      "{} sft --model {} --dataset {} --output_dir {} --add_version false --max_steps 4 "
      "--save_steps 4 --logging_steps 1 --per_device_train_batch_size 2 "
      "--gradient_accumulation_steps 1 --learning_rate 5e-3 --lora_rank 4 --threads 2 "
      "--router_aux_loss_coef 0.01",
      SWIFTLET_BINARY, model, data, tmp / "lora");
  ASSERT_EQ(sh(sft + " > " + tmp / "sft.log" + " 2>&1"), 0) << testing::read_bytes(tmp / "sft.log");
  int aux_rows = 0;
  for (const auto& r : read_jsonl(tmp / "lora/logging.jsonl"))
    if (r.contains("aux_loss")) {
      ++aux_rows;
      // E * sum_e f_e P_e: k (2) for a uniform router, at least ~k/E of it for any.
      EXPECT_GT(r["aux_loss"].get<double>(), 0.5);
      EXPECT_LT(r["aux_loss"].get<double>(), 4.0 + 1e-9);
    }
  EXPECT_EQ(aux_rows, 4);
  const std::string ckpt = tmp / "lora/checkpoint-4";
  const std::string adapter = testing::read_bytes(ckpt + "/adapter_model.safetensors");
  for (const char* key : {"base_model.model.model.layers.1.mlp.experts.3.down_proj.lora_B.weight",
                          "base_model.model.model.layers.0.mlp.gate.lora_A.weight",
                          "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"})
    EXPECT_NE(adapter.find(key), std::string::npos) << key;

  ASSERT_EQ(sh(fmt::format("{} export --adapters {} --merge_lora true > {} 2>&1", SWIFTLET_BINARY,
                           ckpt, tmp / "merge.log")),
            0)
      << testing::read_bytes(tmp / "merge.log");
  const std::string merged = ckpt + "-merged";
  EXPECT_TRUE(fs::exists(merged + "/model.safetensors"));
  EXPECT_NE(testing::read_bytes(merged + "/model.safetensors")
                .find("model.layers.1.mlp.experts.2.up_proj.weight"),
            std::string::npos);
  {
    std::ofstream f(tmp / "ask.jsonl");
    f << R"({"query": "Say red."})"
      << "\n"
      << R"({"query": "Say cat."})"
      << "\n";
  }
  auto infer = [&](const std::string& args, const std::string& out) {
    return sh(
        fmt::format("{} infer {} --val_dataset {} --result_path {} --max_new_tokens 6 "
                    "--temperature 0 > {}.log 2>&1",
                    SWIFTLET_BINARY, args, tmp / "ask.jsonl", out, out));
  };
  ASSERT_EQ(infer("--model " + merged, tmp / "merged.jsonl"), 0)
      << testing::read_bytes(tmp / "merged.jsonl.log");
  ASSERT_EQ(infer("--adapters " + ckpt, tmp / "adapter.jsonl"), 0)
      << testing::read_bytes(tmp / "adapter.jsonl.log");
  ASSERT_EQ(infer("--model " + model, tmp / "base.jsonl"), 0)
      << testing::read_bytes(tmp / "base.jsonl.log");
  const auto m = responses(tmp / "merged.jsonl"), a = responses(tmp / "adapter.jsonl");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m, a);
  EXPECT_NE(m, responses(tmp / "base.jsonl"));  // the adapter changed the model

  // Full fine-tuning of every expert and router; then the run's weights load and generate.
  ASSERT_EQ(sh(fmt::format("{} sft --model {} --dataset {} --output_dir {} --add_version false "
                           "--tuner_type full --max_steps 2 --save_steps 2 --logging_steps 1 "
                           "--per_device_train_batch_size 2 --gradient_accumulation_steps 1 "
                           "--threads 2 > {} 2>&1",
                           SWIFTLET_BINARY, model, data, tmp / "full", tmp / "full.log")),
            0)
      << testing::read_bytes(tmp / "full.log");
  ASSERT_EQ(infer("--model " + tmp / "full/checkpoint-2", tmp / "full.jsonl"), 0)
      << testing::read_bytes(tmp / "full.jsonl.log");
}

TEST(MoeCli, RouterAuxLossCoefNeedsExperts) {
  TempDir tmp;
  const std::string data = write_dataset(tmp);
  const int rc =
      sh(fmt::format("{} sft --model {} --dataset {} --output_dir {} --max_steps 1 "
                     "--router_aux_loss_coef 0.01 > {} 2>&1",
                     SWIFTLET_BINARY, testing::tiny_model("tiny"), data, tmp / "out", tmp / "log"));
  EXPECT_NE(rc, 0);
  EXPECT_NE(testing::read_bytes(tmp / "log").find("applies to mixture-of-experts models"),
            std::string::npos)
      << testing::read_bytes(tmp / "log");
}

// LoRA on the fused expert parameters through the binary: the checkpoint holds PEFT's
// ParamWrapper keys, a run resumed from its middle checkpoint ends with the same adapter as the
// uninterrupted one, and the merged folder answers as the adapter does.
TEST(MoeCli, FusedExpertLoraResumesAndMerges) {
  TempDir tmp;
  const std::string model = testing::tiny_model("tiny-moe");
  const std::string data = write_dataset(tmp);
  auto sft = [&](const std::string& out, const std::string& extra) {
    return sh(fmt::format(
        "{} sft --model {} --dataset {} --output_dir {} --add_version false --max_steps 4 "
        "--save_steps 2 --logging_steps 1 --per_device_train_batch_size 2 "
        "--gradient_accumulation_steps 1 --learning_rate 5e-3 --lora_rank 4 --threads 2 "
        "--target_parameters mlp.experts.gate_up_proj mlp.experts.down_proj {} > {}.log 2>&1",
        SWIFTLET_BINARY, model, data, out, extra, out));
  };
  // PEFT refuses dropout on a parameter LoRA, and ms-swift's default --lora_dropout is 0.05.
  ASSERT_NE(sft(tmp / "dropout", ""), 0);
  EXPECT_NE(testing::read_bytes(tmp / "dropout.log").find("--lora_dropout 0"), std::string::npos)
      << testing::read_bytes(tmp / "dropout.log");

  ASSERT_EQ(sft(tmp / "run", "--lora_dropout 0"), 0) << testing::read_bytes(tmp / "run.log");
  const std::string ckpt = tmp / "run/checkpoint-4";
  const std::string adapter = testing::read_bytes(ckpt + "/adapter_model.safetensors");
  for (const char* key : {"base_model.model.model.layers.1.mlp.experts.base_layer.lora_A.weight",
                          "base_model.model.model.layers.1.mlp.experts.lora_B.weight",
                          "base_model.model.model.layers.0.mlp.gate.lora_A.weight"})
    EXPECT_NE(adapter.find(key), std::string::npos) << key;
  EXPECT_EQ(adapter.find("mlp.experts.0."), std::string::npos);  // no per-expert keys
  const nlohmann::json acfg =
      nlohmann::json::parse(testing::read_bytes(ckpt + "/adapter_config.json"));
  EXPECT_EQ(acfg["target_parameters"],
            nlohmann::json({"mlp.experts.gate_up_proj", "mlp.experts.down_proj"}));
  EXPECT_EQ(acfg["lora_dropout"], 0.0);

  ASSERT_EQ(sft(tmp / "resumed",
                "--lora_dropout 0 --resume_from_checkpoint " + tmp / "run/checkpoint-2"),
            0)
      << testing::read_bytes(tmp / "resumed.log");
  EXPECT_EQ(testing::read_bytes(tmp / "resumed/checkpoint-4/adapter_model.safetensors"), adapter);

  ASSERT_EQ(sh(fmt::format("{} export --adapters {} --merge_lora true > {} 2>&1", SWIFTLET_BINARY,
                           ckpt, tmp / "merge.log")),
            0)
      << testing::read_bytes(tmp / "merge.log");
  {
    std::ofstream f(tmp / "ask.jsonl");
    f << R"({"query": "Say red."})" << "\n" << R"({"query": "Say cat."})" << "\n";
  }
  auto infer = [&](const std::string& args, const std::string& out) {
    return sh(
        fmt::format("{} infer {} --val_dataset {} --result_path {} --max_new_tokens 6 "
                    "--temperature 0 > {}.log 2>&1",
                    SWIFTLET_BINARY, args, tmp / "ask.jsonl", out, out));
  };
  ASSERT_EQ(infer("--model " + ckpt + "-merged", tmp / "merged.jsonl"), 0)
      << testing::read_bytes(tmp / "merged.jsonl.log");
  ASSERT_EQ(infer("--adapters " + ckpt, tmp / "adapter.jsonl"), 0)
      << testing::read_bytes(tmp / "adapter.jsonl.log");
  ASSERT_EQ(infer("--model " + model, tmp / "base.jsonl"), 0)
      << testing::read_bytes(tmp / "base.jsonl.log");
  ASSERT_EQ(responses(tmp / "merged.jsonl").size(), 2u);
  EXPECT_EQ(responses(tmp / "merged.jsonl"), responses(tmp / "adapter.jsonl"));
  EXPECT_NE(responses(tmp / "merged.jsonl"), responses(tmp / "base.jsonl"));
}

}  // namespace
}  // namespace swiftlet
