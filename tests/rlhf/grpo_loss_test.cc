// GRPO's math (rlhf/grpo_loss.h) against the independent float64 PyTorch implementation of
// tests/reference/torch_rlhf.py (autograd gradients) on fixed rollouts: every loss type with and
// without the KL term, asymmetric clipping, old log-probs far enough from the current ones that
// both clip regions are hit; advantages for every estimator and scaling. Then the built-in
// rewards and the external reward command's protocol.
#include "rlhf/grpo_loss.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "io/test_util.h"
#include "model/model_fixture.h"
#include "rlhf/torch_rlhf_reference.h"
#include "rlhf/rewards.h"

namespace swiftlet::rlhf {
namespace {

using nlohmann::json;
using swiftlet::testing::TempDir;
using testing::expect_close;

std::vector<GrpoSequence> random_batch(Rng& rng, size_t n) {
  std::vector<GrpoSequence> b(n);
  for (auto& s : b) {
    const size_t len = 1 + rng.below(9);
    for (size_t t = 0; t < len; ++t) {
      const double x = -(0.05 + 3.0 * rng.uniform());
      s.logps.push_back(x);
      s.old_logps.push_back(x + 0.35 * rng.normal());  // ratios well outside [0.8, 1.2] too
      s.ref_logps.push_back(x + 0.5 * rng.normal());
    }
    s.advantage = rng.normal();
  }
  return b;
}

json to_json(const std::vector<GrpoSequence>& b) {
  json seqs = json::array();
  for (const auto& s : b)
    seqs.push_back({{"policy", s.logps},
                    {"old", s.old_logps},
                    {"reference", s.ref_logps},
                    {"advantage", s.advantage}});
  return {{"sequences", seqs}};
}

TEST(GrpoLossReference, LossTypesKlAndClipping) {
  SWIFTLET_REQUIRE_TORCH();
  struct Case {
    std::string loss_type;
    double beta, eps, eps_high, dapo_tokens;
  };
  const std::vector<Case> cases = {
      {"grpo", 0.04, 0.2, 0.2, 0},  {"grpo", 0.0, 0.2, 0.28, 0},    {"bnpo", 0.04, 0.2, 0.2, 0},
      {"bnpo", 0.3, 0.1, 0.3, 0},   {"dr_grpo", 0.04, 0.2, 0.2, 0}, {"dr_grpo", 0.0, 0.2, 0.2, 0},
      {"dapo", 0.04, 0.2, 0.28, 0}, {"dapo", 0.04, 0.2, 0.2, 57},
  };
  Rng rng(11);
  json ref_cases = json::array();
  std::vector<std::vector<GrpoSequence>> batches;
  for (const auto& c : cases) {
    batches.push_back(random_batch(rng, 6));
    ref_cases.push_back({{"name", c.loss_type},
                         {"kind", "grpo"},
                         {"args",
                          {{"loss_type", c.loss_type},
                           {"beta", c.beta},
                           {"epsilon", c.eps},
                           {"epsilon_high", c.eps_high},
                           {"max_completion_length", 16},
                           {"dapo_tokens", c.dapo_tokens}}},
                         {"batches", {to_json(batches.back())}}});
  }
  const json results = testing::run_torch_rlhf(ref_cases);
  ASSERT_EQ(results.size(), cases.size());
  double clipped_low = 0, clipped_high = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const std::string what = c.loss_type + " beta " + std::to_string(c.beta);
    SCOPED_TRACE(what);
    GrpoLossConfig cfg;
    cfg.loss_type = parse_grpo_loss_type(c.loss_type);
    cfg.beta = c.beta;
    cfg.epsilon_low = c.eps;
    cfg.epsilon_high = c.eps_high;
    cfg.max_completion_length = 16;
    cfg.dapo_tokens = c.dapo_tokens;
    const GrpoLossResult got = grpo_loss(cfg, batches[i]);
    const json& want = results[i]["batches"][0];
    expect_close(got.loss, want["loss"].get<double>(), what + " loss");
    ASSERT_EQ(got.d_logps.size(), want["d_policy"].size());
    for (size_t s = 0; s < got.d_logps.size(); ++s)
      for (size_t t = 0; t < got.d_logps[s].size(); ++t)
        expect_close(got.d_logps[s][t], want["d_policy"][s][t].get<double>(),
                     what + " d seq " + std::to_string(s) + " token " + std::to_string(t));
    const json& m = want["metrics"];
    EXPECT_EQ(m.contains("kl"), c.beta != 0);
    if (c.beta != 0) expect_close(got.kl_sum / got.tokens, m["kl"].get<double>(), "kl");
    expect_close(got.clip_low / got.tokens, m["clip_ratio/low_mean"].get<double>(), "low");
    expect_close(got.clip_high / got.tokens, m["clip_ratio/high_mean"].get<double>(), "high");
    expect_close(got.clip_region / got.tokens, m["clip_ratio/region_mean"].get<double>(), "region");
    clipped_low += got.clip_low;
    clipped_high += got.clip_high;
  }
  EXPECT_GT(clipped_low, 0) << "the cases must reach the lower clip region";
  EXPECT_GT(clipped_high, 0) << "the cases must reach the upper clip region";
}

TEST(GrpoLossReference, Advantages) {
  SWIFTLET_REQUIRE_TORCH();
  struct Case {
    std::string estimator, scale;
  };
  const std::vector<Case> cases = {{"grpo", "group"},
                                   {"grpo", "batch"},
                                   {"grpo", "none"},
                                   {"rloo", "none"},
                                   {"reinforce_plus_plus", "batch"},
                                   {"reinforce_plus_plus", "group"}};
  Rng rng(5);
  std::vector<double> rewards;
  for (int i = 0; i < 12; ++i) rewards.push_back(double(rng.below(3)) + 0.5 * rng.normal());
  for (int i = 0; i < 4; ++i) rewards.push_back(1.0);  // a group with equal rewards
  json ref_cases = json::array();
  for (const auto& c : cases)
    ref_cases.push_back(
        {{"name", c.estimator + " " + c.scale},
         {"kind", "grpo-adv"},
         {"args", {{"advantage_estimator", c.estimator}, {"scale_rewards", c.scale}}},
         {"batches", {{{"rewards", rewards}, {"num_generations", 4}}}}});
  const json results = testing::run_torch_rlhf(ref_cases);
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].estimator + " " + cases[i].scale);
    const AdvantageResult got =
        grpo_advantages(rewards, 4, parse_advantage_estimator(cases[i].estimator),
                        parse_scale_rewards(cases[i].scale));
    const json& want = results[i]["batches"][0];
    ASSERT_EQ(got.advantages.size(), want["advantages"].size());
    for (size_t k = 0; k < got.advantages.size(); ++k)
      expect_close(got.advantages[k], want["advantages"][k].get<double>(), "advantage");
    expect_close(got.reward_mean, want["reward"].get<double>(), "reward");
    expect_close(got.reward_std, want["reward_std"].get<double>(), "reward_std");
    expect_close(got.frac_zero_std, want["frac_reward_zero_std"].get<double>(), "zero std");
  }
  EXPECT_EQ(default_scale_rewards(AdvantageEstimator::kRloo), ScaleRewards::kNone);
  EXPECT_EQ(default_scale_rewards(AdvantageEstimator::kReinforcePlusPlus), ScaleRewards::kBatch);
  EXPECT_THROW(parse_grpo_loss_type("cispo"), Error);
  EXPECT_THROW(parse_scale_rewards("gdpo"), Error);
}

// The spec's closed form (RLHF-SPEC 7.3): in the unclipped region with grpo aggregation,
// d loss / d x_t = (-A w_t + beta (1 - e^{q_t - x_t})) / (|o_i| N).
TEST(GrpoLoss, ClosedFormGradient) {
  GrpoLossConfig cfg;
  GrpoSequence s{{-1.0, -2.0}, {-1.05, -1.95}, {-1.3, -1.7}, 0.7};
  const GrpoLossResult r = grpo_loss(cfg, {s, s});
  for (size_t t = 0; t < 2; ++t) {
    const double w = std::exp(s.logps[t] - s.old_logps[t]);
    const double want =
        (-0.7 * w + 0.04 * (1 - std::exp(s.ref_logps[t] - s.logps[t]))) / (2.0 * 2.0);
    EXPECT_NEAR(r.d_logps[0][t], want, 1e-15);
  }
}

RewardBatch batch_of(const std::vector<std::string>& texts, const json& solution) {
  RewardBatch b;
  for (const auto& t : texts) {
    b.completions.push_back(t);
    b.lengths.push_back(int64_t(t.size()));
    b.truncated.push_back(false);
    b.rows.push_back({{"solution", solution}, {"messages", json::array()}});
  }
  return b;
}

TEST(GrpoRewards, Builtins) {
  RewardOptions o;
  o.max_completion_length = 100;
  auto acc = make_builtin_reward("accuracy", o);
  EXPECT_EQ(acc->name(), "MathAccuracy");
  const auto a = acc->score(batch_of({"The sum is 81.", "\\boxed{81}", "<answer> 81.0 </answer>",
                                      "80", "1,081", "no idea", "<answer>80</answer> 81"},
                                     "81"));
  EXPECT_EQ(a, (std::vector<double>{1, 1, 1, 0, 0, 0, 0}));
  EXPECT_EQ(acc->score(batch_of({"x = 1/2", "0.5", "\\boxed{\\frac{1}{2}}"}, "\\boxed{1/2}")),
            (std::vector<double>{1, 1, 0}));
  EXPECT_EQ(
      acc->score(batch_of({"I am Swiftlet.", "i am swiftlet", "I am ChatGPT."}, "I am Swiftlet.")),
      (std::vector<double>{1, 1, 0}));
  EXPECT_EQ(acc->score(batch_of({"42"}, 42)), (std::vector<double>{1}));  // numeric column
  RewardBatch no_solution = batch_of({"1"}, 1);
  no_solution.rows[0].erase("solution");
  EXPECT_THROW(acc->score(no_solution), Error);

  auto fmt_r = make_builtin_reward("format", o);
  EXPECT_EQ(fmt_r->score(batch_of({"<think>hm</think>\n<answer>3</answer>", "<answer>3</answer>",
                                   "<think>a</think><answer>3</answer> extra"},
                                  "3")),
            (std::vector<double>{1, 0, 0}));

  auto cos = make_builtin_reward("cosine", o);
  RewardBatch cb = batch_of({"81", "80", "81", "80"}, "81");
  cb.lengths = {0, 0, 100, 100};
  const auto c = cos->score(cb);
  EXPECT_NEAR(c[0], 1.0, 1e-12);
  EXPECT_NEAR(c[1], -0.5, 1e-12);
  EXPECT_NEAR(c[2], 0.5, 1e-12);
  EXPECT_NEAR(c[3], 0.0, 1e-12);

  auto rep = make_builtin_reward("repetition", o);
  const auto r = rep->score(batch_of({"a b c d", "a b a b a b", "a b"}, "1"));
  EXPECT_NEAR(r[0], 0.0, 1e-12);
  EXPECT_NEAR(r[1], -(1.0 - 2.0 / 4.0), 1e-12);  // 4 trigrams, 2 distinct
  EXPECT_EQ(r[2], 0.0);

  EXPECT_THROW(make_builtin_reward("soft_overlong", o), Error);  // needs soft_cache_length
  o.soft_cache_length = 20;
  auto so = make_builtin_reward("soft_overlong", o);
  RewardBatch sb = batch_of({"a", "b", "c"}, "1");
  sb.lengths = {80, 90, 100};
  EXPECT_EQ(so->score(sb), (std::vector<double>{0.0, -0.5, -1.0}));
  EXPECT_THROW(make_builtin_reward("react_format", o), Error);
}

TEST(GrpoRewards, ExternalCommandProtocol) {
  TempDir tmp;
  // Scores 1 when the completion equals the row's `target` column, null when it is "skip".
  std::ofstream(tmp / "score.py")
      << "import json, sys\n"
         "d = json.load(sys.stdin)\n"
         "assert len(d['completion_lengths']) == len(d['completions'])\n"
         "out = [None if c == 'skip' else float(c == t) for c, t in zip(d['completions'], "
         "d['target'])]\n"
         "print(json.dumps({'rewards': out}))\n";
  ExternalCommandReward ext("python3 " + (tmp / "score.py"), "external");
  RewardBatch b = batch_of({"yes", "no", "skip"}, "1");
  for (auto& row : b.rows) row["target"] = "yes";
  const auto v = ext.score(b);
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[0], 1.0);
  EXPECT_EQ(v[1], 0.0);
  EXPECT_TRUE(std::isnan(v[2]));
  ExternalCommandReward wrong_count("echo '[1]'", "x");
  EXPECT_THROW(wrong_count.score(b), Error);
  ExternalCommandReward failing("exit 3", "x");
  EXPECT_THROW(failing.score(b), Error);
  ExternalCommandReward not_json("echo hello", "x");
  EXPECT_THROW(not_json.score(b), Error);
}

}  // namespace
}  // namespace swiftlet::rlhf
