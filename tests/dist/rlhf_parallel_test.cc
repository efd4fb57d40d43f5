// Data-parallel online RL through the binary (NPROC_PER_NODE=2 re-executes swiftlet under mpirun):
// GRPO and PPO on 2 ranks x accumulation k sample the same completions, score them the same and
// log the losses and metrics of 1 rank accumulating 2k micro-batches; only rank 0 writes; a PPO
// checkpoint of 2 ranks resumes on 1 rank with the same global batch, even inside an update, and
// one with another global batch is refused before training; PPO under ZeRO-2 and ZeRO-3 logs what
// 1 rank logs.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "dist/dist_fixture.h"
#include "io/test_util.h"
#include "model/model_fixture.h"
#include "tokenizer/tokenizer.h"

namespace swiftlet {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::only_run;
using testing::ProcessRun;
using testing::run_command;
using testing::TempDir;
using testing::train_logs;

const char* kWords[] = {"red", "blue", "green", "cat", "dog", "sun", "moon", "tree"};

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

// The tiny model, 16 prompts and a full reward model of it (2 steps of `rlhf --rlhf_type rm`),
// shared by the tests of this file.
class RlhfParallel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    model_ = testing::tiny_model("tiny");
    {
      std::ofstream prompts(*tmp_ / "prompts.jsonl"), pairs(*tmp_ / "pairs.jsonl");
      for (int i = 0; i < 16; ++i) {
        const std::string q = fmt::format("Name a word like {}.", kWords[i % 8]);
        prompts << json{{"messages", {{{"role", "user"}, {"content", q}}}}}.dump() << "\n";
        pairs << json{{"messages",
                       {{{"role", "user"}, {"content", q}},
                        {{"role", "assistant"}, {"content", kWords[i % 8]}}}},
                      {"rejected_response", kWords[(i + 3) % 8]}}
                     .dump()
              << "\n";
      }
    }
    const ProcessRun rm = run_command(fmt::format(
        "{} rlhf --rlhf_type rm --tuner_type full --model {} --dataset {} --max_steps 2 "
        "--save_steps 2 --per_device_train_batch_size 4 --gradient_accumulation_steps 1 "
        "--learning_rate 1e-3 --output_dir {} --add_version false",
        SWIFTLET_BINARY, model_, *tmp_ / "pairs.jsonl", *tmp_ / "rm"));
    ASSERT_EQ(rm.status, 0) << rm.out;
    rm_ = *tmp_ / "rm/checkpoint-2";
  }
  static void TearDownTestSuite() {
    delete tmp_;
    tmp_ = nullptr;
  }

  static std::string rlhf(const std::string& type, const std::string& out, int accumulation,
                          const std::string& env, const std::string& extra) {
    return fmt::format(
        "env {} {} rlhf --rlhf_type {} --model {} --reward_model {} --dataset {} --output_dir {} "
        "--gradient_accumulation_steps {} --per_device_train_batch_size 2 "
        "--max_completion_length 6 --temperature 1.0 --logging_steps 1 --learning_rate 5e-3 "
        "--lora_rank 4 --load_from_cache_file false {}",
        env, SWIFTLET_BINARY, type, model_, rm_, *tmp_ / "prompts.jsonl", out, accumulation, extra);
  }

  static TempDir* tmp_;
  static std::string model_, rm_;
};

TempDir* RlhfParallel::tmp_ = nullptr;
std::string RlhfParallel::model_, RlhfParallel::rm_;

// Largest |a[k] - b[k]| over the steps, for every key that 1 rank logs; both logs the same length.
double compare_logs(const std::vector<json>& a, const std::vector<json>& b,
                    const std::vector<std::string>& keys, double tol, const std::string& what) {
  double worst = 0;
  EXPECT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    EXPECT_EQ(a[i]["step"], b[i]["step"]) << what;
    EXPECT_EQ(a[i]["epoch"], b[i]["epoch"]) << what;
    for (const auto& k : keys) {
      EXPECT_EQ(a[i].contains(k), b[i].contains(k)) << what << " step " << i + 1 << " " << k;
      if (!a[i].contains(k) || !b[i].contains(k)) continue;
      const double d = std::abs(a[i][k].get<double>() - b[i][k].get<double>());
      worst = std::max(worst, d);
      EXPECT_LE(d, tol) << what << " step " << i + 1 << " " << k << ": " << a[i][k] << " vs "
                        << b[i][k];
    }
  }
  std::cout << what << ": largest difference " << worst << " over " << a.size() << " steps\n";
  return worst;
}

const std::vector<std::string> kGrpoKeys = {"loss",
                                            "grad_norm",
                                            "reward",
                                            "reward_std",
                                            "frac_reward_zero_std",
                                            "rewards/checkpoint-2/mean",
                                            "rewards/checkpoint-2/std",
                                            "kl",
                                            "clip_ratio/low_mean",
                                            "clip_ratio/high_mean",
                                            "clip_ratio/region_mean",
                                            "completions/mean_length",
                                            "completions/min_length",
                                            "completions/max_length",
                                            "completions/clipped_ratio"};

// GRPO: 2 ranks x accumulation 2 against 1 rank x 4 (generation batch 8 = 2 prompts x 4
// completions per step), and a generation reused over steps (num_iterations 2, two steps per
// generation) with dapo's token normalisation, and under ZeRO-2 and ZeRO-3 (LoRA and full): same
// completions, rewards, advantages, losses.
TEST_F(RlhfParallel, GrpoOnTwoRanksLogsWhatOneRankAccumulatingTwiceLogs) {
  struct Case {
    const char* name;
    int accumulation_one;  // 1 rank; 2 ranks take half
    std::string extra_one, extra_two;
  };
  const std::vector<Case> cases = {
      {"grpo", 4, "", ""},
      {"dapo-reuse", 2, "--loss_type dapo --num_iterations 2 --steps_per_generation 4",
       "--loss_type dapo --num_iterations 2 --steps_per_generation 2"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir tmp;
    const std::string common =
        "--num_generations 4 --max_steps 3 --save_steps 100 "
        "--log_completions true --add_version false ";
    const ProcessRun one =
        run_command(rlhf("grpo", tmp / "one", c.accumulation_one, "", common + c.extra_one));
    ASSERT_EQ(one.status, 0) << one.out;
    const ProcessRun two = run_command(rlhf("grpo", tmp / "two", c.accumulation_one / 2,
                                            "NPROC_PER_NODE=2", common + c.extra_two));
    ASSERT_EQ(two.status, 0) << two.out;
    EXPECT_NE(two.out.find(fmt::format("accumulation {} x 2 ranks", c.accumulation_one / 2)),
              std::string::npos)
        << two.out;
    const auto a = read_jsonl(tmp / "one/logging.jsonl"), b = read_jsonl(tmp / "two/logging.jsonl");
    ASSERT_EQ(a.size(), 3u);
    // Sampling, rewards and advantages are the same; losses differ only in the order of float
    // sums (gradients summed over ranks, then logged to 1e-6).
    compare_logs(a, b, kGrpoKeys, 2e-5, std::string("grpo ") + c.name);
    EXPECT_GT(std::abs(a.back()["loss"].get<double>()) + a.back()["grad_norm"].get<double>(), 0);
    if (std::string(c.name) == "grpo") {
      // ZeRO-2 with small buckets: the policy's gradients reduce-scattered, the same again.
      const ProcessRun zero2 =
          run_command(rlhf("grpo", tmp / "zero2", c.accumulation_one / 2, "NPROC_PER_NODE=2",
                           common + c.extra_two + " --deepspeed zero2 --ddp_bucket_cap_mb 0.004"));
      ASSERT_EQ(zero2.status, 0) << zero2.out;
      compare_logs(a, read_jsonl(tmp / "zero2/logging.jsonl"), kGrpoKeys, 2e-5, "grpo zero2");
      // LoRA under ZeRO-3: the pairs and the frozen base sharded, the base gathered whole for
      // the rollouts and for the reference (the base without the pairs).
      const ProcessRun lora3 =
          run_command(rlhf("grpo", tmp / "lora3", c.accumulation_one / 2, "NPROC_PER_NODE=2",
                           common + c.extra_two + " --deepspeed zero3 --ddp_bucket_cap_mb 0.004"));
      ASSERT_EQ(lora3.status, 0) << lora3.out;
      EXPECT_NE(lora3.out.find("and the frozen base weights"), std::string::npos) << lora3.out;
      compare_logs(a, read_jsonl(tmp / "lora3/logging.jsonl"), kGrpoKeys, 2e-5, "grpo lora zero3");
      // Full fine-tuning under ZeRO-3: the policy's parameters sharded, gathered whole for the
      // rollouts (as TRL's ds3_gather_for_generation) and layer by layer for training.
      const std::string full = common + " --tuner_type full --learning_rate 1e-4";
      const ProcessRun full_one =
          run_command(rlhf("grpo", tmp / "full_one", c.accumulation_one, "", full));
      ASSERT_EQ(full_one.status, 0) << full_one.out;
      const ProcessRun zero3 =
          run_command(rlhf("grpo", tmp / "zero3", c.accumulation_one / 2, "NPROC_PER_NODE=2",
                           full + " --deepspeed zero3 --ddp_bucket_cap_mb 0.05"));
      ASSERT_EQ(zero3.status, 0) << zero3.out;
      EXPECT_NE(zero3.out.find("ZeRO stage 3"), std::string::npos) << zero3.out;
      const auto z = read_jsonl(tmp / "zero3/logging.jsonl");
      compare_logs(read_jsonl(tmp / "full_one/logging.jsonl"), z, kGrpoKeys, 2e-5,
                   "grpo full zero3");
      // The case the whole-model gather exists for: in some step the two ranks' longest
      // completions (each rank samples its half of the batch) differ, so a gather per decoding
      // step would have paired different collectives.
      const Tokenizer tok = Tokenizer::load(model_);
      std::map<int64_t, std::vector<size_t>> lengths;  // step -> completion lengths in order
      for (const auto& r : read_jsonl(tmp / "zero3/completions.jsonl"))
        lengths[r["step"].get<int64_t>()].push_back(
            tok.encode(r["completion"].get<std::string>()).size());
      bool uneven = false;
      for (const auto& [step, n] : lengths) {
        const size_t half = n.size() / 2;
        uneven |= *std::max_element(n.begin(), n.begin() + half) !=
                  *std::max_element(n.begin() + half, n.end());
      }
      EXPECT_TRUE(uneven) << "both ranks sampled equally long completions in every step";
    }
    // The completions file, written by rank 0 alone, holds the same rollouts in the same order.
    const auto ca = read_jsonl(tmp / "one/completions.jsonl"),
               cb = read_jsonl(tmp / "two/completions.jsonl");
    ASSERT_EQ(ca.size(), cb.size());
    ASSERT_FALSE(ca.empty());
    for (size_t i = 0; i < ca.size(); ++i) {
      EXPECT_EQ(ca[i]["step"], cb[i]["step"]) << i;
      EXPECT_EQ(ca[i]["prompt"], cb[i]["prompt"]) << i;
      EXPECT_EQ(ca[i]["completion"], cb[i]["completion"]) << i;
      EXPECT_NEAR(ca[i]["reward"].get<double>(), cb[i]["reward"].get<double>(), 1e-6) << i;
      EXPECT_NEAR(ca[i]["advantage"].get<double>(), cb[i]["advantage"].get<double>(), 1e-5) << i;
    }
  }
}

const std::vector<std::string> kPpoKeys = {"loss",
                                           "grad_norm",
                                           "loss/policy_avg",
                                           "loss/value_avg",
                                           "policy/approxkl_avg",
                                           "policy/clipfrac_avg",
                                           "policy/entropy_avg",
                                           "val/clipfrac_avg",
                                           "val/ratio",
                                           "val/ratio_var",
                                           "objective/kl",
                                           "objective/entropy",
                                           "objective/non_score_reward",
                                           "objective/rlhf_reward",
                                           "objective/scores",
                                           "val/num_eos_tokens",
                                           "episode"};

// PPO (LoRA policy and critic): 2 ranks x accumulation 1 against 1 rank x 2 (rollout batch 4),
// 2 PPO epochs an update, 2 updates; the critic's gradients are all-reduced with the policy's.
// The 2-rank checkpoint after step 1 (inside update 1) resumes on 1 rank x 2 and logs steps 2-4
// as the 2-rank run did; resumed with another global batch, it is refused.
TEST_F(RlhfParallel, PpoOnTwoRanksLogsWhatOneRankAccumulatingTwiceLogsAndResumesOnOne) {
  TempDir tmp;
  const std::string common = "--num_ppo_epochs 2 --max_steps 4 --save_steps 1 ";
  const ProcessRun one = run_command(rlhf("ppo", tmp / "one", 2, "", common));
  ASSERT_EQ(one.status, 0) << one.out;
  const ProcessRun two = run_command(rlhf("ppo", tmp / "two", 1, "NPROC_PER_NODE=2", common));
  ASSERT_EQ(two.status, 0) << two.out;
  const auto a = train_logs(tmp / "one"), b = train_logs(tmp / "two");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_TRUE(a[1].contains("val/ratio_var"));
  compare_logs(a, b, kPpoKeys, 2e-5, "ppo");
  EXPECT_GT(a.back()["grad_norm"].get<double>(), 0);

  // One run folder, written by rank 0: the critic and the whole update's rollouts.
  const fs::path run = only_run(tmp / "two");
  const fs::path ckpt = run / "checkpoint-1";
  EXPECT_TRUE(fs::exists(ckpt / "value_model"));
  std::ifstream rf(ckpt / "ppo_rollouts.json");
  const json rollouts = json::parse(rf);
  EXPECT_EQ(rollouts["rollouts"].size(), 4u);

  const ProcessRun resumed = run_command(rlhf("ppo", tmp / "resumed", 2, "", common) +
                                         " --resume_from_checkpoint " + ckpt.string());
  ASSERT_EQ(resumed.status, 0) << resumed.out;
  const auto r = train_logs(tmp / "resumed");
  ASSERT_EQ(r.size(), 3u);
  compare_logs(std::vector<json>(b.begin() + 1, b.end()), r, kPpoKeys, 2e-5, "ppo resumed 2 -> 1");

  const ProcessRun other = run_command(rlhf("ppo", tmp / "other", 1, "", common) +
                                       " --resume_from_checkpoint " + ckpt.string());
  EXPECT_NE(other.status, 0) << other.out;
  EXPECT_NE(other.out.find("holds a PPO rollout batch of 4 prompts, and this run's is 2"),
            std::string::npos)
      << other.out;
  EXPECT_FALSE(fs::exists(tmp / "other")) << "refused before training";
}

// PPO under ZeRO (small buckets): the policy sharded (ZeRO-2: its gradients and optimizer
// states; ZeRO-3, LoRA and full: its parameters too, gathered whole for the rollouts, and a full
// run's reference model), the critic whole on every rank with its gradients all-reduced; the same
// logs as 1 rank, and the checkpoint (the policy's gathered moments and the critic's) resumes on
// 1 rank.
TEST_F(RlhfParallel, PpoUnderZeroLogsWhatOneRankLogsAndResumesOnOne) {
  TempDir tmp;
  const std::string common =
      "--num_ppo_epochs 2 --max_steps 4 --save_steps 2 --ddp_bucket_cap_mb 0.004 ";
  struct Case {
    std::string name, tuner, deepspeed, says;
  };
  const std::vector<Case> cases = {
      {"zero2", "lora", "zero2", "ZeRO stage 2: optimizer states and gradients sharded"},
      {"zero3", "lora", "zero3", "and the frozen base weights"},
      {"zero3-full", "full", "zero3", "sharded over 2 ranks"},  // the reference model
  };
  std::map<std::string, std::vector<json>> one_rank;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string tuner = "--tuner_type " + c.tuner + " --learning_rate " +
                              (c.tuner == "full" ? "1e-4 " : "5e-3 ");
    if (!one_rank.count(c.tuner)) {
      const ProcessRun one =
          run_command(rlhf("ppo", tmp / ("one-" + c.tuner), 2, "", common + tuner));
      ASSERT_EQ(one.status, 0) << one.out;
      one_rank[c.tuner] = train_logs(tmp / ("one-" + c.tuner));
      ASSERT_EQ(one_rank[c.tuner].size(), 4u);
    }
    const auto& a = one_rank[c.tuner];
    const ProcessRun two = run_command(rlhf("ppo", tmp / c.name, 1, "NPROC_PER_NODE=2",
                                            common + tuner + "--deepspeed " + c.deepspeed));
    ASSERT_EQ(two.status, 0) << two.out;
    EXPECT_NE(two.out.find("ppo under ZeRO stage " + c.deepspeed.substr(4) +
                           ": the policy is sharded; the value model is whole on every rank"),
              std::string::npos)
        << two.out;
    EXPECT_NE(two.out.find(c.says), std::string::npos) << two.out;
    compare_logs(a, train_logs(tmp / c.name), kPpoKeys, 2e-5, "ppo " + c.name);
    if (c.name == "zero3") continue;
    const fs::path ckpt = only_run(tmp / c.name) / "checkpoint-2";
    const ProcessRun resumed =
        run_command(rlhf("ppo", tmp / (c.name + "-resumed"), 2, "", common + tuner) +
                    " --resume_from_checkpoint " + ckpt.string());
    ASSERT_EQ(resumed.status, 0) << resumed.out;
    compare_logs(std::vector<json>(a.begin() + 2, a.end()), train_logs(tmp / (c.name + "-resumed")),
                 kPpoKeys, 2e-5, "ppo " + c.name + " resumed 2 -> 1");
  }
}

}  // namespace
}  // namespace swiftlet
