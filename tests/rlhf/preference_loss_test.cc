// The offline preference losses (rlhf/preference_loss.h) against the independent float64 PyTorch
// implementation of tests/reference/torch_rlhf.py (autograd gradients): every rlhf_type, every DPO
// loss type, MPO mixtures, rpo_alpha, ld_alpha, label smoothing, bco_pair's running mean over
// several micro-batches, KTO with both labels and its logging window, RM with margins and
// centering — loss, every per-token gradient and every metric (names included). Then the flag
// resolution (defaults, warnings, every rejected value) and the bco_pair state round trip.
#include "rlhf/preference_loss.h"

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
using testing::expect_close;

void expect_grads(const std::vector<std::vector<double>>& got, const json& want,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].size(), want[i].size()) << what << " sequence " << i;
    for (size_t t = 0; t < got[i].size(); ++t)
      expect_close(got[i][t], want[i][t].get<double>(),
                   what + " sequence " + std::to_string(i) + " token " + std::to_string(t));
  }
}

void expect_metrics(const std::map<std::string, double>& got, const json& want,
                    const std::string& what) {
  std::vector<std::string> got_names, want_names;
  for (const auto& [k, v] : got) got_names.push_back(k);
  for (const auto& [k, v] : want.items()) want_names.push_back(k);
  std::sort(want_names.begin(), want_names.end());
  EXPECT_EQ(got_names, want_names) << what << ": metric names";
  for (const auto& [k, v] : want.items())
    if (got.count(k)) expect_close(got.at(k), v.get<double>(), what + " metric " + k);
}

RlhfArgs args_from_json(const json& a) {
  RlhfArgs r;
  r.rlhf_type = a.value("rlhf_type", "dpo");
  auto num = [&](const char* k, std::optional<double>& out) {
    if (a.contains(k)) out = a[k].get<double>();
  };
  num("beta", r.beta);
  num("label_smoothing", r.label_smoothing);
  num("rpo_alpha", r.rpo_alpha);
  num("ld_alpha", r.ld_alpha);
  num("discopop_tau", r.discopop_tau);
  num("cpo_alpha", r.cpo_alpha);
  num("simpo_gamma", r.simpo_gamma);
  num("desirable_weight", r.desirable_weight);
  num("undesirable_weight", r.undesirable_weight);
  num("center_rewards_coefficient", r.center_rewards_coefficient);
  if (a.contains("loss_type")) r.loss_type = a["loss_type"].get<std::vector<std::string>>();
  if (a.contains("loss_weights")) r.loss_weights = a["loss_weights"].get<std::vector<double>>();
  return r;
}

// Label-token logps in (-3.05, -0.05], and reference logps near them (per-token noise `spread`).
SequenceLogps random_sequence(Rng& rng, size_t length, bool reference, double spread) {
  SequenceLogps s;
  for (size_t t = 0; t < length; ++t) {
    s.policy.push_back(-(0.05 + 3.0 * rng.uniform()));
    if (reference) s.reference.push_back(s.policy.back() + spread * rng.normal());
  }
  return s;
}

json sequences_json(const std::vector<SequenceLogps>& seqs) {
  json out = json::array();
  for (const SequenceLogps& s : seqs) {
    json j = {{"policy", s.policy}};
    if (!s.reference.empty()) j["reference"] = s.reference;
    out.push_back(j);
  }
  return out;
}

struct PairBatch {
  std::vector<SequenceLogps> chosen, rejected;
};

// Four pairs of different lengths (1 to 9 tokens), chosen and rejected lengths differing.
PairBatch random_pairs(Rng& rng, bool reference, double spread) {
  PairBatch b;
  const size_t lengths[4][2] = {{3, 5}, {1, 2}, {7, 4}, {9, 6}};
  for (const auto& l : lengths) {
    b.chosen.push_back(random_sequence(rng, l[0], reference, spread));
    b.rejected.push_back(random_sequence(rng, l[1], reference, spread));
  }
  return b;
}

struct PairCase {
  std::string name;
  json args;
  int batches = 1;
  double spread = 0.4;  // reference noise per token
};

TEST(PreferenceLossReference, PairTypes) {
  SWIFTLET_REQUIRE_TORCH();
  const std::vector<PairCase> cases = {
      // dpo: every loss type
      {"dpo sigmoid", {{"rlhf_type", "dpo"}}},
      {"dpo cDPO", {{"loss_type", {"sigmoid"}}, {"label_smoothing", 0.2}}},
      {"dpo robust", {{"loss_type", {"robust"}}, {"label_smoothing", 0.2}}},
      {"dpo hinge", {{"loss_type", {"hinge"}}, {"beta", 0.5}}, 1, 2.0},
      {"dpo ipo", {{"loss_type", {"ipo"}}}},
      {"dpo exo_pair eps 0", {{"loss_type", {"exo_pair"}}}},
      {"dpo exo_pair eps 0.1", {{"loss_type", {"exo_pair"}}, {"label_smoothing", 0.1}}},
      {"dpo nca_pair", {{"loss_type", {"nca_pair"}}, {"beta", 0.3}}},
      {"dpo bco_pair", {{"loss_type", {"bco_pair"}}}, 3},
      {"dpo sppo_hard", {{"loss_type", {"sppo_hard"}}}},
      {"dpo aot", {{"loss_type", {"aot"}}, {"label_smoothing", 0.1}}, 1, 1.0},
      {"dpo aot_unpaired", {{"loss_type", {"aot_unpaired"}}, {"label_smoothing", 0.1}}, 1, 1.0},
      {"dpo apo_zero", {{"loss_type", {"apo_zero"}}, {"beta", 0.5}}},
      {"dpo apo_down", {{"loss_type", {"apo_down"}}, {"beta", 0.5}}},
      {"dpo discopop", {{"loss_type", {"discopop"}}}},
      {"dpo discopop tau", {{"loss_type", {"discopop"}}, {"discopop_tau", 0.5}, {"beta", 0.2}}},
      {"dpo sft", {{"loss_type", {"sft"}}}},
      // MPO mixtures, rpo, ld
      {"dpo MPO sigmoid+bco+sft",
       {{"loss_type", {"sigmoid", "bco_pair", "sft"}}, {"loss_weights", {0.8, 0.2, 1.0}}},
       2},
      {"dpo MPO sigmoid+ipo", {{"loss_type", {"sigmoid", "ipo"}}, {"loss_weights", {1.0, 0.5}}}},
      {"dpo MPO exo then sigmoid", {{"loss_type", {"exo_pair", "sigmoid"}}}},
      {"dpo MPO negative weight",
       {{"loss_type", {"sigmoid", "hinge"}}, {"loss_weights", {1.0, -2.0}}, {"beta", 0.5}},
       1,
       2.0},
      {"dpo rpo", {{"rpo_alpha", 0.5}}},
      {"dpo ld", {{"ld_alpha", 0.3}}},
      {"dpo ld ipo rpo", {{"loss_type", {"ipo"}}, {"ld_alpha", 0.6}, {"rpo_alpha", 1.0}}},
      {"dpo ld bco", {{"loss_type", {"bco_pair"}}, {"ld_alpha", 0.0}}, 2},
      // cpo / simpo
      {"cpo sigmoid", {{"rlhf_type", "cpo"}}},
      {"cpo smoothed", {{"rlhf_type", "cpo"}, {"label_smoothing", 0.1}}},
      {"cpo hinge", {{"rlhf_type", "cpo"}, {"loss_type", {"hinge"}}, {"beta", 0.5}}},
      {"cpo ipo", {{"rlhf_type", "cpo"}, {"loss_type", {"ipo"}}, {"cpo_alpha", 0.5}}},
      {"simpo", {{"rlhf_type", "simpo"}}},
      {"simpo pure", {{"rlhf_type", "simpo"}, {"cpo_alpha", 0.0}}},
      {"simpo smoothed gamma",
       {{"rlhf_type", "simpo"}, {"label_smoothing", 0.1}, {"simpo_gamma", 0.5}, {"beta", 2.5}}},
      {"cpo alphapo", {{"rlhf_type", "cpo"}, {"loss_type", {"alphapo"}}}},
      // orpo
      {"orpo", {{"rlhf_type", "orpo"}}},
      {"orpo lambda", {{"rlhf_type", "orpo"}, {"beta", 0.5}}},
  };

  Rng rng(20260817);
  json ref_cases = json::array();
  std::vector<std::vector<PairBatch>> inputs;
  for (const PairCase& c : cases) {
    const PreferenceConfig cfg = resolve_config(args_from_json(c.args));
    const bool reference = cfg.type == RlhfType::kDpo;
    json batches = json::array();
    inputs.emplace_back();
    for (int b = 0; b < c.batches; ++b) {
      PairBatch pb = random_pairs(rng, reference, c.spread);
      if (cfg.type == RlhfType::kOrpo) {
        // Per-token means on both sides of -ln 2, where log(1 - e^x) switches its formula.
        for (double& x : pb.chosen[1].policy) x = -0.01 - 0.3 * rng.uniform();
        for (double& x : pb.rejected[3].policy) x = -0.02 - 0.2 * rng.uniform();
      }
      if (c.name.find("hinge") != std::string::npos) {
        // Pair 0 far past the margin (1 - beta z < 0), so both sides of the hinge are exercised.
        for (double& x : pb.chosen[0].policy) x = -0.05;
        for (double& x : pb.rejected[0].policy) x = -3.0;
        for (double& x : pb.chosen[0].reference) x -= 1.0;
      }
      batches.push_back(
          {{"chosen", sequences_json(pb.chosen)}, {"rejected", sequences_json(pb.rejected)}});
      inputs.back().push_back(std::move(pb));
    }
    ref_cases.push_back(
        {{"name", c.name}, {"kind", "pair"}, {"args", c.args}, {"batches", batches}});
  }
  const json results = testing::run_torch_rlhf(ref_cases);
  ASSERT_EQ(results.size(), cases.size());

  for (size_t ci = 0; ci < cases.size(); ++ci) {
    SCOPED_TRACE(cases[ci].name);
    const PreferenceConfig cfg = resolve_config(args_from_json(cases[ci].args));
    PairLossState state;
    for (int b = 0; b < cases[ci].batches; ++b) {
      const std::string what = cases[ci].name + " batch " + std::to_string(b);
      const PairBatch& in = inputs[ci][size_t(b)];
      const PairLossResult got = pair_loss(cfg, in.chosen, in.rejected, state);
      const json& want = results[ci]["batches"][size_t(b)];
      expect_close(got.loss, want["loss"].get<double>(), what + " loss");
      expect_grads(got.d_chosen, want["d_chosen"], what + " d_chosen");
      expect_grads(got.d_rejected, want["d_rejected"], what + " d_rejected");
      expect_metrics(got.metrics, want["metrics"], what);
    }
    expect_close(state.bco.mean, results[ci]["bco_mean"].get<double>(), cases[ci].name + " bco");
    if (cases[ci].name == "dpo hinge" || cases[ci].name == "cpo hinge") {
      // Both sides of the hinge are exercised: some pairs past the margin (no gradient), some not.
      int flat = 0;
      for (const json& d : results[ci]["batches"][0]["d_rejected"]) flat += d[0] == 0.0;
      EXPECT_GT(flat, 0) << cases[ci].name;
      EXPECT_LT(flat, 4) << cases[ci].name;
    }
  }
}

TEST(PreferenceLossReference, Kto) {
  SWIFTLET_REQUIRE_TORCH();
  struct KtoCase {
    std::string name;
    json args;
    // Per batch, per example: desirable?
    std::vector<std::vector<bool>> labels;
    bool logits = false;
    double kl_shift = 0;  // added to the KL completions' policy logps (> 0: KL above 0)
  };
  const std::vector<KtoCase> cases = {
      {"kto", {{"rlhf_type", "kto"}}, {{true, false, true, true, false}}, false, 0.3},
      {"kto weights",
       {{"rlhf_type", "kto"},
        {"desirable_weight", 1.0},
        {"undesirable_weight", 1.5},
        {"beta", 0.3}},
       {{true, false, false, true}, {true, true, true}, {false, false, true, false, false}},
       true,
       0.2},
      {"kto KL clamped",
       {{"rlhf_type", "kto"}, {"desirable_weight", 0.7}},
       {{false, true, false}, {false, false}},
       true,
       -0.5},
      {"apo_zero_unpaired",
       {{"rlhf_type", "kto"}, {"loss_type", {"apo_zero_unpaired"}}, {"undesirable_weight", 2.0}},
       {{true, false, true, false}}},
  };
  Rng rng(7342);
  json ref_cases = json::array();
  std::vector<std::vector<std::vector<KtoExample>>> inputs;
  for (const KtoCase& c : cases) {
    json batches = json::array();
    inputs.emplace_back();
    for (const auto& labels : c.labels) {
      std::vector<KtoExample> ex;
      json jex = json::array();
      for (size_t i = 0; i < labels.size(); ++i) {
        KtoExample e;
        e.completion = random_sequence(rng, 1 + rng.below(8), true, 0.4);
        e.kl_completion = random_sequence(rng, 1 + rng.below(8), true, 0.1);
        for (double& x : e.kl_completion.policy) x += c.kl_shift;
        e.desirable = labels[i];
        json j = {{"policy", e.completion.policy},
                  {"reference", e.completion.reference},
                  {"kl_policy", e.kl_completion.policy},
                  {"kl_reference", e.kl_completion.reference},
                  {"desirable", e.desirable}};
        if (c.logits) {
          e.logits_sum = 1e5 * rng.normal();
          j["logits_sum"] = *e.logits_sum;
        }
        if (c.args.contains("loss_type")) e.kl_completion = {};  // not needed for apo
        ex.push_back(std::move(e));
        jex.push_back(j);
      }
      batches.push_back({{"examples", jex}});
      inputs.back().push_back(std::move(ex));
    }
    ref_cases.push_back(
        {{"name", c.name}, {"kind", "kto"}, {"args", c.args}, {"batches", batches}});
  }
  const json results = testing::run_torch_rlhf(ref_cases);
  ASSERT_EQ(results.size(), cases.size());
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    SCOPED_TRACE(cases[ci].name);
    const PreferenceConfig cfg = resolve_config(args_from_json(cases[ci].args));
    std::map<std::string, double> window;
    for (size_t b = 0; b < inputs[ci].size(); ++b) {
      const std::string what = cases[ci].name + " batch " + std::to_string(b);
      const KtoLossResult got = kto_loss(cfg, inputs[ci][b]);
      const json& want = results[ci]["batches"][b];
      expect_close(got.loss, want["loss"].get<double>(), what + " loss");
      expect_grads(got.d_policy, want["d_policy"], what + " d_policy");
      expect_metrics(got.metrics, want["metrics"], what);
      for (const auto& [k, v] : got.metrics) window[k] += v;
    }
    expect_metrics(kto_window_metrics(window, int64_t(inputs[ci].size())), results[ci]["window"],
                   cases[ci].name + " window");
  }
  // The clamped case really clamps and the shifted ones do not.
  EXPECT_EQ(results[2]["batches"][0]["metrics"]["kl"].get<double>(), 0.0);
  EXPECT_GT(results[1]["batches"][0]["metrics"]["kl"].get<double>(), 0.0);
}

TEST(PreferenceLossReference, RewardModel) {
  SWIFTLET_REQUIRE_TORCH();
  const std::vector<std::pair<std::string, json>> cases = {
      {"rm", {{"rlhf_type", "rm"}}},
      {"rm margin", {{"rlhf_type", "rm"}}},
      {"rm center", {{"rlhf_type", "rm"}, {"center_rewards_coefficient", 0.01}}},
      {"rm margin center", {{"rlhf_type", "rm"}, {"center_rewards_coefficient", 0.3}}},
  };
  Rng rng(9927);
  json ref_cases = json::array();
  struct In {
    std::vector<double> c, r, m;
  };
  std::vector<In> inputs;
  for (const auto& [name, args] : cases) {
    In in;
    for (int i = 0; i < 6; ++i) {
      in.c.push_back(2 * rng.normal());
      in.r.push_back(2 * rng.normal());
      if (name.find("margin") != std::string::npos)
        in.m.push_back(i == 2 ? 0.0 : 3 * rng.uniform());
    }
    json batch = {{"chosen", in.c}, {"rejected", in.r}};
    if (!in.m.empty()) batch["margin"] = in.m;
    ref_cases.push_back({{"name", name}, {"kind", "rm"}, {"args", args}, {"batches", {batch}}});
    inputs.push_back(std::move(in));
  }
  const json results = testing::run_torch_rlhf(ref_cases);
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    SCOPED_TRACE(cases[ci].first);
    const PreferenceConfig cfg = resolve_config(args_from_json(cases[ci].second));
    const RewardLossResult got = reward_loss(cfg, inputs[ci].c, inputs[ci].r, inputs[ci].m);
    const json& want = results[ci]["batches"][0];
    expect_close(got.loss, want["loss"].get<double>(), "loss");
    expect_grads({got.d_chosen}, json::array({want["d_chosen"]}), "d_chosen");
    expect_grads({got.d_rejected}, json::array({want["d_rejected"]}), "d_rejected");
    expect_metrics(got.metrics, want["metrics"], cases[ci].first);
  }
}

// --- flag resolution ------------------------------------------------------------------------

PreferenceConfig resolve(const json& a) { return resolve_config(args_from_json(a)); }

bool warned(const PreferenceConfig& cfg, const std::string& text) {
  for (const std::string& w : cfg.warnings)
    if (w.find(text) != std::string::npos) return true;
  return false;
}

TEST(PreferenceConfig, DefaultsPerType) {
  PreferenceConfig dpo = resolve({{"rlhf_type", "dpo"}});
  EXPECT_EQ(dpo.type, RlhfType::kDpo);
  EXPECT_EQ(dpo.loss_types, std::vector<LossType>{LossType::kSigmoid});
  EXPECT_EQ(dpo.loss_weights, std::vector<double>{1.0});
  EXPECT_EQ(dpo.beta, 0.1);
  EXPECT_EQ(dpo.label_smoothing, 0.0);
  EXPECT_FALSE(dpo.rpo_alpha);
  EXPECT_FALSE(dpo.ld_alpha);
  EXPECT_EQ(dpo.discopop_tau, 0.05);
  EXPECT_TRUE(dpo.warnings.empty());

  PreferenceConfig simpo = resolve({{"rlhf_type", "simpo"}});
  EXPECT_EQ(simpo.type, RlhfType::kCpo);
  EXPECT_EQ(simpo.loss_types, std::vector<LossType>{LossType::kSimpo});
  EXPECT_EQ(simpo.beta, 2.0);
  EXPECT_EQ(simpo.simpo_gamma, 1.0);
  EXPECT_EQ(simpo.cpo_alpha, 1.0);
  EXPECT_TRUE(warned(simpo, "CPO-SimPO"));
  EXPECT_FALSE(warned(resolve({{"rlhf_type", "simpo"}, {"cpo_alpha", 0.0}}), "CPO-SimPO"));
  // Given values win over the simpo rewrite; a given loss type stays.
  EXPECT_EQ(resolve({{"rlhf_type", "simpo"}, {"beta", 2.5}}).beta, 2.5);
  PreferenceConfig simpo_sigmoid = resolve({{"rlhf_type", "simpo"}, {"loss_type", {"sigmoid"}}});
  EXPECT_EQ(simpo_sigmoid.loss_types, std::vector<LossType>{LossType::kSigmoid});
  EXPECT_EQ(simpo_sigmoid.beta, 2.0);

  PreferenceConfig cpo = resolve({{"rlhf_type", "cpo"}});
  EXPECT_EQ(cpo.loss_types, std::vector<LossType>{LossType::kSigmoid});
  EXPECT_EQ(cpo.beta, 0.1);
  PreferenceConfig alphapo = resolve({{"rlhf_type", "cpo"}, {"loss_type", {"alphapo"}}});
  EXPECT_EQ(alphapo.loss_types, std::vector<LossType>{LossType::kSimpo});
  EXPECT_EQ(alphapo.cpo_alpha, 0.0);

  PreferenceConfig kto = resolve({{"rlhf_type", "kto"}});
  EXPECT_EQ(kto.loss_types, std::vector<LossType>{LossType::kKto});
  EXPECT_EQ(kto.beta, 0.1);
  EXPECT_EQ(kto.desirable_weight, 1.0);
  EXPECT_EQ(kto.undesirable_weight, 1.0);

  PreferenceConfig orpo = resolve({{"rlhf_type", "orpo"}});
  EXPECT_EQ(orpo.type, RlhfType::kOrpo);
  EXPECT_TRUE(orpo.loss_types.empty());
  EXPECT_EQ(orpo.beta, 0.1);

  PreferenceConfig rm = resolve({{"rlhf_type", "rm"}, {"center_rewards_coefficient", 0.01}});
  EXPECT_EQ(rm.type, RlhfType::kRm);
  EXPECT_EQ(rm.center_rewards_coefficient, 0.01);
  EXPECT_FALSE(resolve({{"rlhf_type", "rm"}}).center_rewards_coefficient);

  PreferenceConfig mpo = resolve({{"loss_type", {"sigmoid", "bco_pair", "sft"}}});
  EXPECT_EQ(mpo.loss_types,
            (std::vector<LossType>{LossType::kSigmoid, LossType::kBcoPair, LossType::kSft}));
  EXPECT_EQ(mpo.loss_weights, (std::vector<double>{1.0, 1.0, 1.0}));
  EXPECT_EQ(resolve({{"loss_type", {"ipo"}}, {"loss_weights", {0.5}}}).loss_weights,
            std::vector<double>{0.5});
}

TEST(PreferenceConfig, Warnings) {
  for (const char* t :
       {"hinge", "ipo", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down"})
    EXPECT_TRUE(warned(resolve({{"loss_type", {t}}, {"label_smoothing", 0.1}}),
                       std::string("loss_type ") + t + " does not support label smoothing"))
        << t;
  for (const char* t : {"sigmoid", "robust", "exo_pair", "aot", "aot_unpaired"})
    EXPECT_TRUE(resolve({{"loss_type", {t}}, {"label_smoothing", 0.1}}).warnings.empty()) << t;
  EXPECT_TRUE(
      warned(resolve({{"rlhf_type", "cpo"}, {"loss_type", {"hinge"}}, {"label_smoothing", 0.1}}),
             "does not support label smoothing"));
  EXPECT_TRUE(resolve({{"rlhf_type", "cpo"}, {"label_smoothing", 0.1}}).warnings.empty());
  // Flags of another type are reported, not silently dropped.
  EXPECT_TRUE(warned(resolve({{"rlhf_type", "cpo"}, {"rpo_alpha", 1.0}}),
                     "--rpo_alpha does not apply to rlhf_type cpo"));
  EXPECT_TRUE(warned(resolve({{"rlhf_type", "kto"}, {"cpo_alpha", 1.0}}), "--cpo_alpha"));
  EXPECT_TRUE(warned(resolve({{"rlhf_type", "orpo"}, {"loss_type", {"sigmoid"}}}), "--loss_type"));
  EXPECT_TRUE(
      warned(resolve({{"rlhf_type", "dpo"}, {"desirable_weight", 2.0}}), "--desirable_weight"));
  EXPECT_TRUE(warned(resolve({{"rlhf_type", "rm"}, {"beta", 0.2}}), "--beta"));
}

TEST(PreferenceConfig, RejectsWhatCannotWork) {
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "dpp"}}), "unknown --rlhf_type 'dpp'");
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "grpo"}}), "online type");
  EXPECT_ERROR_HAS(resolve({{"loss_type", {"simpo"}}}),
                   "unknown loss_type 'simpo' for rlhf_type dpo");
  EXPECT_ERROR_HAS(resolve({{"loss_type", {"aot_pair"}}}), "accepts sigmoid, hinge, ipo");
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "cpo"}, {"loss_type", {"bco_pair"}}}),
                   "unknown loss_type 'bco_pair' for rlhf_type cpo");
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "kto"}, {"loss_type", {"sigmoid"}}}),
                   "unknown loss_type 'sigmoid' for rlhf_type kto");
  EXPECT_ERROR_HAS(resolve({{"loss_type", {"kto_pair"}}}), "use --rlhf_type kto");
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "cpo"}, {"loss_type", {"kto_pair"}}}), "kto_pair");
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "simpo"}, {"loss_type", {"simpo", "sigmoid"}}}),
                   "only supported for rlhf_type dpo, not simpo");
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "kto"}, {"loss_type", {"kto", "apo_zero_unpaired"}}}),
                   "only supported for rlhf_type dpo");
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "cpo"}, {"loss_weights", {1.0}}}),
                   "--loss_weights is only used by rlhf_type dpo");
  EXPECT_ERROR_HAS(resolve({{"loss_type", {"sigmoid", "ipo"}}, {"loss_weights", {1.0}}}),
                   "--loss_weights has 1 values but there are 2 loss types (sigmoid, ipo)");
  EXPECT_ERROR_HAS(resolve({{"loss_weights", {1.0, 2.0}}}), "there is 1 loss type");
  EXPECT_ERROR_HAS(resolve({{"loss_type", {"sigmoid", "ipo"}}, {"loss_weights", {1.0, NAN}}}),
                   "--loss_weights must be finite");
  EXPECT_ERROR_HAS(resolve({{"beta", -0.1}}), "--beta must be >= 0");
  EXPECT_ERROR_HAS(resolve({{"beta", NAN}}), "--beta must be a finite number");
  for (const char* t : {"ipo", "sppo_hard"})
    EXPECT_ERROR_HAS(resolve({{"loss_type", {t}}, {"beta", 0.0}}), "divides by beta");
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "simpo"}, {"beta", 0.0}}), "divides by beta");
  EXPECT_ERROR_HAS(resolve({{"label_smoothing", 0.6}}), "--label_smoothing must be in [0, 0.5]");
  EXPECT_ERROR_HAS(resolve({{"label_smoothing", -0.1}}), "--label_smoothing must be in [0, 0.5]");
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "cpo"}, {"label_smoothing", 0.7}}), "[0, 0.5]");
  EXPECT_ERROR_HAS(resolve({{"loss_type", {"robust"}}, {"label_smoothing", 0.5}}),
                   "1 - 2 * label_smoothing");
  EXPECT_ERROR_HAS(resolve({{"loss_type", {"discopop"}}, {"discopop_tau", 0.0}}),
                   "--discopop_tau must be > 0");
  EXPECT_ERROR_HAS(resolve({{"ld_alpha", 1.5}}), "--ld_alpha must be in [0, 1]");
  EXPECT_ERROR_HAS(resolve({{"ld_alpha", -0.5}}), "--ld_alpha must be in [0, 1]");
  EXPECT_ERROR_HAS(resolve({{"rpo_alpha", -1.0}}), "--rpo_alpha must be >= 0");
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "cpo"}, {"cpo_alpha", -1.0}}),
                   "--cpo_alpha must be >= 0");
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "kto"}, {"desirable_weight", -1.0}}),
                   "--desirable_weight must be >= 0");
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "kto"}, {"undesirable_weight", -1.0}}),
                   "--undesirable_weight must be >= 0");
  EXPECT_ERROR_HAS(resolve({{"rlhf_type", "rm"}, {"center_rewards_coefficient", -0.01}}),
                   "--center_rewards_coefficient must be >= 0");
}

TEST(PreferenceLoss, EmptySequencesAreUserErrors) {
  const PreferenceConfig dpo = resolve({{"rlhf_type", "dpo"}});
  PairLossState state;
  SequenceLogps c, r;
  c.policy = c.reference = {-1.0};
  const std::vector<SequenceLogps> chosen = {c}, rejected = {r};
  EXPECT_ERROR_HAS(pair_loss(dpo, chosen, rejected, state),
                   "pair 0: the rejected response has no label tokens");
  const PreferenceConfig kto = resolve({{"rlhf_type", "kto"}});
  std::vector<KtoExample> ex(1);
  EXPECT_ERROR_HAS(kto_loss(kto, ex), "KTO example 0: the completion has no label tokens");
}

// A run resumed from saved state continues bit for bit; a malformed state is a user error.
TEST(PreferenceLoss, BcoStateRoundTrips) {
  const PreferenceConfig cfg = resolve({{"loss_type", {"bco_pair", "sigmoid"}}});
  Rng rng(1);
  std::vector<PairBatch> batches;
  for (int b = 0; b < 4; ++b) batches.push_back(random_pairs(rng, true, 0.7));

  PairLossState straight;
  std::vector<PairLossResult> want;
  for (const PairBatch& b : batches) want.push_back(pair_loss(cfg, b.chosen, b.rejected, straight));

  PairLossState first;
  pair_loss(cfg, batches[0].chosen, batches[0].rejected, first);
  pair_loss(cfg, batches[1].chosen, batches[1].rejected, first);
  const std::string saved = first.to_json().dump();
  PairLossState resumed = PairLossState::from_json(json::parse(saved));
  EXPECT_EQ(resumed.bco.mean, first.bco.mean);
  EXPECT_EQ(resumed.bco.count, first.bco.count);
  for (size_t b = 2; b < batches.size(); ++b) {
    const PairLossResult got = pair_loss(cfg, batches[b].chosen, batches[b].rejected, resumed);
    EXPECT_EQ(got.loss, want[b].loss) << "batch " << b;
    EXPECT_EQ(got.d_chosen, want[b].d_chosen) << "batch " << b;
    EXPECT_EQ(got.d_rejected, want[b].d_rejected) << "batch " << b;
    EXPECT_EQ(got.metrics, want[b].metrics) << "batch " << b;
  }
  EXPECT_EQ(resumed.bco.mean, straight.bco.mean);
  // A fresh state would have given a different loss: the state matters.
  PairLossState fresh;
  EXPECT_NE(pair_loss(cfg, batches[2].chosen, batches[2].rejected, fresh).loss, want[2].loss);

  EXPECT_ERROR_HAS(PairLossState::from_json(json::parse(R"({"bco_running_mean": 0.1})")),
                   "bco_running_count is missing");
  EXPECT_ERROR_HAS(PairLossState::from_json(json::parse("[1, 2]")), "missing or not a number");
}

// bco_pair and KTO take the mean over ranks through the hook, before use.
TEST(PreferenceLoss, RankMeanHook) {
  Rng rng(3);
  const PairBatch b = random_pairs(rng, true, 0.5);
  const PreferenceConfig bco = resolve({{"loss_type", {"bco_pair"}}});
  PairLossState local, shared;
  pair_loss(bco, b.chosen, b.rejected, local);
  pair_loss(bco, b.chosen, b.rejected, shared, [](double x) { return (x + 0.25) / 2; });
  EXPECT_DOUBLE_EQ(shared.bco.mean, (local.bco.mean + 0.25) / 2);

  const PreferenceConfig kto = resolve({{"rlhf_type", "kto"}});
  std::vector<KtoExample> ex(2);
  for (KtoExample& e : ex) {
    e.completion = random_sequence(rng, 3, true, 0.3);
    e.kl_completion = random_sequence(rng, 2, true, 0.0);  // local KL 0
  }
  ex[1].desirable = false;
  EXPECT_EQ(kto_loss(kto, ex).metrics.at("kl"), 0.0);
  EXPECT_EQ(kto_loss(kto, ex, [](double) { return 0.75; }).metrics.at("kl"), 0.75);
  EXPECT_EQ(kto_loss(kto, ex, [](double) { return -0.75; }).metrics.at("kl"), 0.0);  // clamped
}

TEST(PreferenceLoss, KtoWeightWarning) {
  PreferenceConfig cfg = resolve({{"rlhf_type", "kto"}});
  EXPECT_FALSE(kto_weight_warning(cfg, 200, 200));
  // n_D 100, n_U 300: desirable_weight in [3, 3.99] or undesirable_weight in [0.25, 0.33].
  const auto w = kto_weight_warning(cfg, 100, 300);
  ASSERT_TRUE(w);
  EXPECT_NE(w->find("--desirable_weight in [3, 3.99]"), std::string::npos) << *w;
  EXPECT_NE(w->find("--undesirable_weight in [0.25, 0.33]"), std::string::npos) << *w;
  cfg.desirable_weight = 3.5;
  EXPECT_FALSE(kto_weight_warning(cfg, 100, 300));
  cfg.desirable_weight = 1;
  cfg.undesirable_weight = 0.3;
  EXPECT_FALSE(kto_weight_warning(cfg, 100, 300));
}

}  // namespace
}  // namespace swiftlet::rlhf
