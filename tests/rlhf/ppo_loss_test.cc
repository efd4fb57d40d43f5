// PPO's math (rlhf/ppo_loss.h) against the float64 PyTorch transcription of TRL 0.29's
// PPOTrainer in tests/reference/torch_rlhf.py: per-token KL rewards (k1, k3) with the score at
// L_i (or L_i - 1 for a full-width response), optional reward whitening, GAE, advantage
// whitening, returns, and one micro-batch's clipped policy and value losses with their gradients
// by every new log-prob and value, and the metrics.
#include "rlhf/ppo_loss.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "io/test_util.h"
#include "model/model_fixture.h"
#include "rlhf/torch_rlhf_reference.h"

namespace swiftlet::rlhf {
namespace {

using nlohmann::json;
using swiftlet::testing::TempDir;

// PPO's values sum many terms: an absolute floor of 1e-12 for the ones that are exactly 0.
void expect_close_ppo(double got, double want, const std::string& what) {
  testing::expect_close(got, want, what, 1e-12);
}

void expect_rows(const std::vector<std::vector<double>>& got, const json& want, size_t n_of_row,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    for (size_t t = 0; t < n_of_row && t < got[i].size(); ++t)
      expect_close_ppo(got[i][t], want[i][t].get<double>(),
                   what + " " + std::to_string(i) + "," + std::to_string(t));
}

TEST(PpoLossReference, RewardsGaeAndClippedLosses) {
  SWIFTLET_REQUIRE_TORCH();
  struct Case {
    std::string name;
    json args;
  };
  const std::vector<Case> cases = {
      {"defaults", json::object()},
      {"k3 whitened", {{"kl_estimator", "k3"}, {"whiten_rewards", true}}},
      {"gamma lam clip",
       {{"gamma", 0.9},
        {"lam", 0.8},
        {"cliprange", 0.1},
        {"cliprange_value", 0.05},
        {"vf_coef", 0.5},
        {"kl_coef", 0.2}}},
  };
  Rng rng(3);
  const int64_t W = 7;
  std::vector<std::vector<PpoResponse>> batches;
  std::vector<std::vector<std::vector<double>>> new_lp, new_v;
  json ref_cases = json::array();
  for (const auto& c : cases) {
    std::vector<PpoResponse> b;
    json responses = json::array();
    std::vector<std::vector<double>> nl, nv;
    for (int i = 0; i < 5; ++i) {
      PpoResponse r;
      const int64_t L = i == 0 ? W : 1 + int64_t(rng.below(uint64_t(W)));  // one full width
      std::vector<double> n;
      for (int64_t t = 0; t < L; ++t) {
        r.logps.push_back(-(0.1 + 2.5 * rng.uniform()));
        r.ref_logps.push_back(r.logps.back() + 0.3 * rng.normal());
        n.push_back(r.logps.back() + 0.3 * rng.normal());  // ratios on both sides of the clip
      }
      std::vector<double> v;
      for (int64_t t = 0; t < W; ++t) {
        r.values.push_back(rng.normal());
        v.push_back(r.values.back() + 0.2 * rng.normal());
      }
      r.score = 2.0 * rng.normal();
      responses.push_back({{"logps", r.logps},
                           {"ref_logps", r.ref_logps},
                           {"values", r.values},
                           {"score", r.score},
                           {"new_logps", n},
                           {"new_values", v}});
      b.push_back(r);
      nl.push_back(n);
      nv.push_back(v);
    }
    batches.push_back(b);
    new_lp.push_back(nl);
    new_v.push_back(nv);
    ref_cases.push_back({{"name", c.name},
                         {"kind", "ppo"},
                         {"args", c.args},
                         {"batches", {{{"responses", responses}}}}});
  }
  const json results = testing::run_torch_rlhf(ref_cases);
  double clipped = 0, vclipped = 0;
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    SCOPED_TRACE(cases[ci].name);
    const json& a = cases[ci].args;
    PpoConfig cfg;
    cfg.kl_coef = a.value("kl_coef", 0.05);
    cfg.kl_k3 = a.value("kl_estimator", "k1") == "k3";
    cfg.gamma = a.value("gamma", 1.0);
    cfg.lam = a.value("lam", 0.95);
    cfg.whiten_rewards = a.value("whiten_rewards", false);
    cfg.cliprange = a.value("cliprange", 0.2);
    cfg.cliprange_value = a.value("cliprange_value", 0.2);
    cfg.vf_coef = a.value("vf_coef", 0.1);
    const json& want = results[ci]["batches"][0];
    const PpoRollout ro = ppo_rollout(cfg, batches[ci]);
    expect_rows(ro.rewards, want["rewards"], size_t(W), "rewards");
    expect_rows(ro.advantages, want["advantages"], size_t(W), "advantages");
    // Returns past L_i + 1 are never read (the value loss stops at L_i).
    for (size_t i = 0; i < ro.returns.size(); ++i)
      for (size_t t = 0; t <= batches[ci][i].logps.size() && t < size_t(W); ++t)
        expect_close_ppo(ro.returns[i][t], want["returns"][i][t].get<double>(), "returns");
    const json& m = want["metrics"];
    expect_close_ppo(ro.kl, m["objective/kl"].get<double>(), "objective/kl");
    expect_close_ppo(ro.non_score_reward, m["objective/non_score_reward"].get<double>(), "nsr");
    expect_close_ppo(ro.scores, m["objective/scores"].get<double>(), "scores");
    std::vector<PpoLossInput> inputs;
    for (size_t i = 0; i < batches[ci].size(); ++i)
      inputs.push_back(
          {&batches[ci][i], &ro.advantages[i], &ro.returns[i], new_lp[ci][i], new_v[ci][i]});
    const PpoLossResult r = ppo_loss(cfg, inputs);
    expect_close_ppo(r.loss, want["loss"].get<double>(), "loss");
    expect_close_ppo(r.pg_loss, want["pg_loss"].get<double>(), "pg_loss");
    expect_close_ppo(r.vf_loss, want["vf_loss"].get<double>(), "vf_loss");
    expect_rows(r.d_logps, want["d_logps"], size_t(W), "d_logps");
    expect_rows(r.d_values, want["d_values"], size_t(W), "d_values");
    expect_close_ppo(r.pg_clipfrac, m["policy/clipfrac_avg"].get<double>(), "clipfrac");
    expect_close_ppo(r.vf_clipfrac, m["val/clipfrac_avg"].get<double>(), "val clipfrac");
    expect_close_ppo(r.approxkl, m["policy/approxkl_avg"].get<double>(), "approxkl");
    clipped += r.pg_clipfrac;
    vclipped += r.vf_clipfrac;
  }
  EXPECT_GT(clipped, 0) << "the cases must reach the policy clip";
  EXPECT_GT(vclipped, 0) << "the cases must reach the value clip";
}

}  // namespace
}  // namespace swiftlet::rlhf
