// Every flag `swiftlet rlhf` adds reaches the training: one-step runs on a tiny model whose first
// logged values are known in closed form (at step 1 the policy equals its reference), and the
// refusals ms-swift makes, each with its sentence.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/test_util.h"
#include "data/preference.h"
#include "model/folder.h"
#include "model/init.h"
#include "model/transformer.h"
#include "model/model_fixture.h"

namespace swiftlet {
namespace {

using testing::TempDir;
using json = nlohmann::json;

class RlhfCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream pairs(tmp_ / "pairs.jsonl"), kto(tmp_ / "kto.jsonl");
    for (int i = 0; i < 8; ++i) {
      const json chat = {{{"role", "user"}, {"content", fmt::format("Who are you? {}", i)}},
                         {{"role", "assistant"}, {"content", "I am Swiftlet, a small assistant."}}};
      pairs << json{{"messages", chat}, {"rejected_response", "No."}}.dump() << "\n";
      kto << json{{"messages", chat}, {"label", true}}.dump() << "\n";
    }
  }
  // The first logged record of a one-step run; `rc` receives the exit code, `log` the output.
  json first(const std::string& flags, int* rc = nullptr, std::string* log = nullptr) {
    const std::string out = tmp_ / fmt::format("run{}", runs_++);
    const std::string cmd = fmt::format(
        "{} rlhf --model {} {} --max_steps 1 --logging_steps 1 --per_device_train_batch_size 4 "
        "--gradient_accumulation_steps 1 --output_dir {} --add_version false > {}.log 2>&1",
        SWIFTLET_BINARY, model_, flags, out, out);
    const int status = std::system(cmd.c_str());
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (rc) *rc = code;
    if (log) *log = testing::read_bytes(out + ".log");
    if (rc == nullptr) {
      EXPECT_EQ(code, 0) << testing::read_bytes(out + ".log");
    }
    if (code != 0) return json();
    std::ifstream f(out + "/logging.jsonl");
    std::string line;
    std::getline(f, line);
    return json::parse(line);
  }
  std::string refusal(const std::string& flags) {
    int rc = 0;
    std::string log;
    first(flags, &rc, &log);
    EXPECT_NE(rc, 0) << flags;
    return log;
  }
  std::string pairs() const { return "--dataset " + tmp_ / "pairs.jsonl"; }
  std::string kto() const { return "--dataset " + tmp_ / "kto.jsonl"; }

  TempDir tmp_;
  std::string model_ = testing::tiny_model("tiny");
  int runs_ = 0;
};

TEST_F(RlhfCli, LossFlagsReachTheLoss) {
  // cpo has no reference: rewards = beta * logps.
  json c = first(pairs() + " --rlhf_type cpo --beta 0.5");
  EXPECT_NEAR(c["rewards/chosen"].get<double>(), 0.5 * c["logps/chosen"].get<double>(), 1e-4);
  EXPECT_GT(c["nll_loss"].get<double>(), 0.0);
  EXPECT_EQ(first(pairs() + " --rlhf_type cpo --cpo_alpha 0")["nll_loss"].get<double>(), 0.0);
  EXPECT_NE(first(pairs() + " --rlhf_type cpo --label_smoothing 0.2")["loss"], c["loss"]);
  EXPECT_NE(first(pairs() + " --rlhf_type simpo --simpo_gamma 3")["loss"],
            first(pairs() + " --rlhf_type simpo")["loss"]);
  // dpo at step 1: z = 0, so sigmoid gives log 2; --loss_weights scales the mixed-in sft NLL.
  json one = first(pairs() + " --rlhf_type dpo --loss_type sigmoid sft --loss_weights 1 0");
  json two = first(pairs() + " --rlhf_type dpo --loss_type sigmoid sft --loss_weights 1 1");
  EXPECT_NEAR(one["loss"].get<double>(), std::log(2.0), 1e-5);
  EXPECT_GT(two["loss"].get<double>(), one["loss"].get<double>() + 1.0);
  EXPECT_TRUE(first(pairs() + " --rlhf_type dpo --rpo_alpha 0.5").contains("nll_loss"));
  // LD-DPO reweights the policy's tokens past the shorter response only: rewards leave 0.
  EXPECT_NE(first(pairs() + " --rlhf_type dpo --ld_alpha 0.5")["rewards/chosen"].get<double>(),
            0.0);
  EXPECT_NE(refusal(pairs() + " --rlhf_type dpo --loss_type discopop --discopop_tau 0")
                .find("discopop_tau"),
            std::string::npos);
  // kto at step 1: every example's loss is weight * (1 - sigmoid(0)).
  EXPECT_NEAR(
      first(kto() + " --rlhf_type kto --loss_type apo_zero_unpaired --desirable_weight 2")["loss"]
          .get<double>(),
      1.0, 1e-5);
  EXPECT_NE(refusal(kto() + " --rlhf_type kto --undesirable_weight -1").find("undesirable_weight"),
            std::string::npos);
  EXPECT_TRUE(first(pairs() + " --rlhf_type rm --center_rewards_coefficient 0.01")
                  .contains("center_rewards_loss"));
  EXPECT_FALSE(first(pairs() + " --rlhf_type rm").contains("center_rewards_loss"));
}

// logits/chosen and logits/rejected: over every label token of the step's pairs, the mean logit
// over the vocabulary at the position predicting it, recomputed here with the inference forward
// of the same (untrained) model on the same encoded pairs. All four pairs are in the one step.
TEST_F(RlhfCli, LogitsMetricsAreTheMeanLogitOfTheLabelTokens) {
  std::ofstream four(tmp_ / "four.jsonl");
  for (int i = 0; i < 4; ++i) {
    const json chat = {{{"role", "user"}, {"content", fmt::format("Name {}?", i)}},
                       {{"role", "assistant"}, {"content", fmt::format("Swiftlet {}.", i * i)}}};
    four << json{{"messages", chat}, {"rejected_response", "No idea."}}.dump() << "\n";
  }
  four.close();
  DataArgs a;
  a.dataset = {tmp_ / "four.jsonl"};
  a.load_from_cache_file = false;
  const PreferenceBundle data = load_preference_datasets(a, model_, "dpo");
  ASSERT_EQ(data.train.size(), 4u);
  ModelFolder folder = load_model_folder(model_);
  ThreadPool pool(1);
  auto dev = DeviceRegistry::create("cpu:0", pool);
  Transformer model(*dev, folder.config, folder.weights, DType::kF32);
  double sum[2] = {0, 0}, count[2] = {0, 0};
  for (const PreferenceSample& p : data.train)
    for (int side = 0; side < 2; ++side) {
      const TokenizedSample& t = side == 0 ? p.chosen : p.rejected;
      const Tensor logits = model.logits(t.input_ids);
      const int64_t V = logits.dim(1);
      for (size_t r = 0; r + 1 < t.labels.size(); ++r) {
        if (t.labels[r + 1] < 0) continue;
        double m = 0;
        for (int64_t v = 0; v < V; ++v) m += logits.data<float>()[int64_t(r) * V + v];
        sum[side] += m / double(V);
        ++count[side];
      }
    }
  const json j = first(fmt::format("--dataset {} --tuner_type full", tmp_ / "four.jsonl"));
  EXPECT_NEAR(j["logits/chosen"].get<double>(), sum[0] / count[0], 1e-5) << j.dump();
  EXPECT_NEAR(j["logits/rejected"].get<double>(), sum[1] / count[1], 1e-5) << j.dump();
  EXPECT_GT(std::abs(sum[0] / count[0] - sum[1] / count[1]), 1e-4);  // the sides differ
  // KTO: desirable rows are the chosen side.
  const json k = first(kto() + " --rlhf_type kto --tuner_type full");
  EXPECT_TRUE(k.contains("logits/chosen")) << k.dump();
  EXPECT_FALSE(k.contains("logits/rejected")) << k.dump();
}

TEST_F(RlhfCli, ReferenceFlags) {
  // Without a reference of its own the step-1 DPO loss is log 2; another reference moves it.
  EXPECT_NEAR(first(pairs() + " --rlhf_type dpo --tuner_type full")["loss"].get<double>(),
              std::log(2.0), 1e-5);
  InitOptions o;
  o.preset = "tiny";
  o.seed = 8;
  o.tokenizer_dir = testing::qwen3_tokenizer_dir();
  o.output_dir = tmp_ / "other";
  init_model_folder(o);
  EXPECT_GT(std::abs(first(pairs() + " --rlhf_type dpo --tuner_type full --ref_model " +
                           o.output_dir)["loss"]
                         .get<double>() -
                     std::log(2.0)),
            1e-3);
  // A LoRA reference adapter: a few SFT steps give one that differs from the base.
  const std::string sft = tmp_ / "sft";
  ASSERT_EQ(
      std::system(
          fmt::format("{} sft --model {} {} --max_steps 3 --learning_rate 1e-2 --save_steps 3 "
                      "--output_dir {} --add_version false > {}.log 2>&1",
                      SWIFTLET_BINARY, model_, pairs(), sft, sft)
              .c_str()),
      0);
  EXPECT_GT(
      std::abs(first(pairs() + " --rlhf_type dpo --ref_adapters " + sft + "/checkpoint-3")["loss"]
                   .get<double>() -
               std::log(2.0)),
      1e-3);
}

TEST_F(RlhfCli, Refusals) {
  EXPECT_NE(
      refusal(pairs() + " --rlhf_type dpo --ref_model " + model_).find("--ref_model is only used"),
      std::string::npos);
  EXPECT_NE(refusal(pairs() + " --rlhf_type dpo --tuner_type full --ref_adapters x")
                .find("--ref_adapters"),
            std::string::npos);
  EXPECT_NE(refusal(pairs() + " --rlhf_type cpo --tuner_type full --ref_model " + model_)
                .find("does not require"),
            std::string::npos);
  EXPECT_NE(refusal(pairs() + " --rlhf_type dpo --loss_type sigmoid hinge --loss_weights 1 abc")
                .find("--loss_weights: 'abc' is not a number"),
            std::string::npos);
  EXPECT_NE(refusal(pairs() + " --rlhf_type gkd").find("--rlhf_type gkd is not supported yet"),
            std::string::npos);
  EXPECT_NE(refusal(pairs() + " --rlhf_type dpo --kl_coef 0.1")
                .find("--kl_coef only applies to --rlhf_type ppo"),
            std::string::npos);
  EXPECT_NE(refusal(pairs() + " --rlhf_type dpo --num_generations 4")
                .find("--num_generations only applies to --rlhf_type grpo"),
            std::string::npos);
  // grpo's own refusals, each with its sentence.
  const std::string grpo = " --rlhf_type grpo --dataset " + (tmp_ / "pairs.jsonl");
  for (const auto& [flags, says] : std::vector<std::pair<std::string, std::string>>{
           {" --num_generations 4", "grpo needs a reward"},
           {" --reward_funcs accuracy --rpo_alpha 1", "--rpo_alpha does not apply"},
           {" --reward_funcs accuracy --num_generations 1", "at least 2"},
           {" --reward_funcs accuracy --num_generations 3", "not divisible by --num_generations 3"},
           {" --reward_funcs accuracy --num_generations 4 --loss_type cispo", "cispo"},
           {" --reward_funcs accuracy --num_generations 4 --scale_rewards gdpo", "gdpo"},
           {" --reward_funcs accuracy --num_generations 4 --advantage_estimator gae", "gae"},
           {" --reward_funcs accuracy --num_generations 4 --temperature 0", "positive"},
           {" --reward_funcs nope --num_generations 4", "not a built-in reward"},
           {" --reward_funcs soft_overlong --num_generations 4", "--soft_cache_length"},
           {" --reward_funcs accuracy format --reward_weights 1 --num_generations 4",
            "--reward_weights has 1 values for 2 rewards"},
           {" --reward_funcs accuracy --num_generations 4 --steps_per_generation 2 "
            "--generation_batch_size 8",
            "not both"},
           {" --reward_funcs accuracy --num_generations 4 --reward_model " + model_,
            "is not a sequence classifier"},
           {" --reward_funcs accuracy --num_generations 4 --truncation_strategy right", "right"},
           {" --reward_funcs accuracy --num_generations 2 --generation_batch_size 40",
            "8 training prompts are fewer than the 20 prompts of one generation batch"},
           {" --reward_funcs accuracy --num_generations 4 --loss_scale all",
            "--loss_scale does not apply"},
       })
    EXPECT_NE(refusal(grpo + flags).find(says), std::string::npos) << flags;
  // ppo's own refusals, each with its sentence.
  const std::string ppo = " --rlhf_type ppo --dataset " + (tmp_ / "pairs.jsonl");
  for (const auto& [flags, says] : std::vector<std::pair<std::string, std::string>>{
           {"", "--rlhf_type ppo needs --reward_model"},
           {" --reward_model " + model_, "is not a sequence classifier"},
           {" --reward_model " + model_ + " --beta 0.1", "--beta does not apply to --rlhf_type ppo"},
           {" --reward_model " + model_ + " --top_k 5", "--top_k does not apply to --rlhf_type ppo"},
           {" --reward_model " + model_ + " --num_generations 4", "--num_generations does not apply"},
           {" --reward_model " + model_ + " --reward_funcs accuracy", "--reward_funcs does not apply"},
           {" --reward_model " + model_ + " --rpo_alpha 1", "--rpo_alpha does not apply"},
           {" --reward_model " + model_ + " --loss_scale all", "--loss_scale does not apply"},
           {" --reward_model " + model_ + " --ref_model " + model_, "--ref_model is only used"},
           {" --reward_model " + model_ + " --num_ppo_epochs 0", "--num_ppo_epochs must be at least 1"},
           {" --reward_model " + model_ + " --lam 1.5", "--gamma and --lam must be in [0, 1]"},
           {" --reward_model " + model_ + " --vf_coef -1", "must not be negative"},
           {" --reward_model " + model_ + " --temperature 0", "positive"},
       })
    EXPECT_NE(refusal(ppo + flags).find(says), std::string::npos) << flags;
  EXPECT_NE(refusal(pairs() + " --rlhf_type dpo --packing true").find("packing"),
            std::string::npos);
}

// --dynamic_sample: groups whose rewards are all equal are replaced by groups of other prompts.
// An external reward varies (the completion's length) only on prompts marked "vary"; without
// dynamic sampling most generations hold a flat group, with it none does.
TEST_F(RlhfCli, GrpoDynamicSampleReplacesFlatGroups) {
  {
    std::ofstream p(tmp_ / "prompts.jsonl");
    for (int i = 0; i < 16; ++i)
      p << json{{"messages", {{{"role", "user"}, {"content", fmt::format("Say {}.", i)}}}},
                {"vary", i % 2 == 0}}
               .dump()
        << "\n";
    std::ofstream(tmp_ / "score.py")
        << "import json, sys\n"
           "d = json.load(sys.stdin)\n"
           "print(json.dumps([float(len(c)) if v else 0.0 for c, v in zip(d['completions'], "
           "d['vary'])]))\n";
  }
  auto flat_share = [&](const std::string& extra) {
    double sum = 0;
    for (int seed = 1; seed <= 3; ++seed) {
      const json j = first(fmt::format(
          "--rlhf_type grpo --dataset {} --external_reward_command 'python3 {}' "
          "--num_generations 2 --max_completion_length 8 --temperature 1.5 --data_seed {} {}",
          tmp_ / "prompts.jsonl", tmp_ / "score.py", seed, extra));
      EXPECT_TRUE(j.contains("frac_reward_zero_std")) << j.dump();
      sum += j.value("frac_reward_zero_std", 1.0);
    }
    return sum / 3;
  };
  EXPECT_GT(flat_share(""), 0.3);
  EXPECT_EQ(flat_share("--dynamic_sample true --max_resample_times 8"), 0.0);
}

}  // namespace
}  // namespace swiftlet
