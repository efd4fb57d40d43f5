#include "rlhf/preference_config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "core/error.h"
#include "core/log.h"

namespace swiftlet::rlhf {
namespace {

constexpr std::pair<LossType, std::string_view> kLossNames[] = {
    {LossType::kSigmoid, "sigmoid"},
    {LossType::kRobust, "robust"},
    {LossType::kHinge, "hinge"},
    {LossType::kIpo, "ipo"},
    {LossType::kExoPair, "exo_pair"},
    {LossType::kNcaPair, "nca_pair"},
    {LossType::kBcoPair, "bco_pair"},
    {LossType::kSppoHard, "sppo_hard"},
    {LossType::kAot, "aot"},
    {LossType::kAotUnpaired, "aot_unpaired"},
    {LossType::kApoZero, "apo_zero"},
    {LossType::kApoDown, "apo_down"},
    {LossType::kDiscopop, "discopop"},
    {LossType::kSft, "sft"},
    {LossType::kSimpo, "simpo"},
    {LossType::kKto, "kto"},
    {LossType::kApoZeroUnpaired, "apo_zero_unpaired"},
};

// The loss types each type accepts, in the order ms-swift / TRL list them.
const std::vector<LossType>& accepted(RlhfType t) {
  using L = LossType;
  static const std::vector<LossType> dpo = {
      L::kSigmoid,  L::kHinge, L::kIpo,         L::kExoPair,  L::kNcaPair, L::kRobust,  L::kBcoPair,
      L::kSppoHard, L::kAot,   L::kAotUnpaired, L::kDiscopop, L::kApoZero, L::kApoDown, L::kSft};
  static const std::vector<LossType> cpo = {L::kSigmoid, L::kHinge, L::kIpo, L::kSimpo};
  static const std::vector<LossType> kto = {L::kKto, L::kApoZeroUnpaired};
  static const std::vector<LossType> none;
  switch (t) {
    case RlhfType::kDpo:
      return dpo;
    case RlhfType::kCpo:
      return cpo;
    case RlhfType::kKto:
      return kto;
    default:
      return none;
  }
}

std::string names_of(const std::vector<LossType>& types) {
  std::vector<std::string_view> n;
  for (LossType t : types) n.push_back(loss_type_name(t));
  return fmt::format("{}", fmt::join(n, ", "));
}

void require_finite(const std::optional<double>& v, const char* flag) {
  if (v && !std::isfinite(*v))
    throw Error(fmt::format("--{} must be a finite number, got {}", flag, *v));
}

void require_non_negative(const std::optional<double>& v, const char* flag, const char* why) {
  if (v && *v < 0) throw Error(fmt::format("--{} must be >= 0, got {}", flag, *v), why);
}

}  // namespace

std::string_view loss_type_name(LossType t) {
  for (const auto& [type, name] : kLossNames)
    if (type == t) return name;
  return "?";
}

std::string_view rlhf_type_name(RlhfType t) {
  switch (t) {
    case RlhfType::kDpo:
      return "dpo";
    case RlhfType::kCpo:
      return "cpo";
    case RlhfType::kOrpo:
      return "orpo";
    case RlhfType::kKto:
      return "kto";
    case RlhfType::kRm:
      return "rm";
  }
  return "?";
}

bool PreferenceConfig::has(LossType t) const {
  return std::find(loss_types.begin(), loss_types.end(), t) != loss_types.end();
}

PreferenceConfig resolve_config(const RlhfArgs& args) {
  PreferenceConfig cfg;
  const std::string& given = args.rlhf_type;
  const bool simpo = given == "simpo";
  if (given == "dpo") {
    cfg.type = RlhfType::kDpo;
  } else if (given == "cpo" || simpo) {
    cfg.type = RlhfType::kCpo;
  } else if (given == "orpo") {
    cfg.type = RlhfType::kOrpo;
  } else if (given == "kto") {
    cfg.type = RlhfType::kKto;
  } else if (given == "rm") {
    cfg.type = RlhfType::kRm;
  } else if (given == "grpo" || given == "ppo" || given == "gkd") {
    throw Error(
        fmt::format("rlhf_type {} is an online type: it has no pair or example loss", given),
        "the offline preference losses are dpo, orpo, simpo, cpo, kto and rm");
  } else {
    throw Error(fmt::format("unknown --rlhf_type '{}'", given),
                "use one of dpo, orpo, simpo, cpo, kto, rm, ppo, grpo, gkd");
  }
  const std::string_view type_name = simpo ? "simpo" : rlhf_type_name(cfg.type);
  auto warn = [&cfg](std::string msg) {
    log_warning("{}", msg);
    cfg.warnings.push_back(std::move(msg));
  };
  auto not_for_type = [&](const auto& v, const char* flag) {
    if (v) warn(fmt::format("--{} does not apply to rlhf_type {} and is ignored", flag, type_name));
  };

  for (auto [v, flag] : {std::pair{&args.beta, "beta"},
                         {&args.label_smoothing, "label_smoothing"},
                         {&args.rpo_alpha, "rpo_alpha"},
                         {&args.ld_alpha, "ld_alpha"},
                         {&args.discopop_tau, "discopop_tau"},
                         {&args.cpo_alpha, "cpo_alpha"},
                         {&args.simpo_gamma, "simpo_gamma"},
                         {&args.desirable_weight, "desirable_weight"},
                         {&args.undesirable_weight, "undesirable_weight"},
                         {&args.center_rewards_coefficient, "center_rewards_coefficient"}})
    require_finite(*v, flag);

  // Loss types (ms-swift _process_loss_type, then the type's default).
  std::vector<std::string> requested = args.loss_type.value_or(std::vector<std::string>{});
  if (requested.size() > 1 && cfg.type != RlhfType::kDpo)
    throw Error(fmt::format("several loss types ({}) are only supported for rlhf_type dpo, not {}",
                            fmt::join(requested, ", "), type_name),
                "pass one --loss_type, or use --rlhf_type dpo to mix losses (MPO)");
  if (args.loss_weights) {
    if (cfg.type != RlhfType::kDpo)
      throw Error(fmt::format("--loss_weights is only used by rlhf_type dpo, not {}", type_name),
                  "drop --loss_weights");
    const size_t n = std::max<size_t>(requested.size(), 1);
    if (args.loss_weights->size() != n)
      throw Error(
          fmt::format(
              "--loss_weights has {} values but there {} {} loss type{} ({})",
              args.loss_weights->size(), n == 1 ? "is" : "are", n, n == 1 ? "" : "s",
              requested.empty() ? "sigmoid" : fmt::format("{}", fmt::join(requested, ", "))),
          "give one weight per --loss_type value, in the same order");
    for (double w : *args.loss_weights)
      if (!std::isfinite(w)) throw Error(fmt::format("--loss_weights must be finite, got {}", w));
  }
  if (cfg.type == RlhfType::kOrpo || cfg.type == RlhfType::kRm) {
    not_for_type(args.loss_type, "loss_type");
  } else {
    if (requested.empty()) {
      requested = {cfg.type == RlhfType::kKto ? "kto" : simpo ? "simpo" : "sigmoid"};
    }
    for (const std::string& name : requested) {
      if (name == "kto_pair")
        throw Error(fmt::format("loss_type kto_pair was removed from {}", type_name),
                    "use --rlhf_type kto for KTO");
      if (cfg.type == RlhfType::kCpo && name == "alphapo") {
        // TRL's CPOConfig: alphapo is simpo with cpo_alpha 0 (AlphaPO's own alpha stays 0).
        cfg.loss_types.push_back(LossType::kSimpo);
        continue;
      }
      auto it = std::find_if(accepted(cfg.type).begin(), accepted(cfg.type).end(),
                             [&](LossType t) { return loss_type_name(t) == name; });
      if (it == accepted(cfg.type).end())
        throw Error(fmt::format("unknown loss_type '{}' for rlhf_type {}", name, type_name),
                    fmt::format("rlhf_type {} accepts {}", type_name,
                                names_of(accepted(cfg.type)) +
                                    (cfg.type == RlhfType::kCpo ? ", alphapo" : "")));
      cfg.loss_types.push_back(*it);
    }
    cfg.loss_weights = args.loss_weights.value_or(std::vector<double>(cfg.loss_types.size(), 1.0));
  }
  const bool alphapo =
      cfg.type == RlhfType::kCpo && requested.size() == 1 && requested[0] == "alphapo";

  // beta: simpo 2.0 (when rewritten from --rlhf_type simpo), everything else here 0.1.
  cfg.beta = args.beta.value_or(simpo ? 2.0 : 0.1);
  if (cfg.beta < 0)
    throw Error(fmt::format("--beta must be >= 0, got {}", cfg.beta),
                "beta scales the implicit reward; a negative value prefers the rejected responses");
  for (LossType t : {LossType::kIpo, LossType::kSppoHard, LossType::kSimpo})
    if (cfg.beta == 0 && cfg.has(t))
      throw Error(fmt::format("--beta 0 is not allowed with loss_type {}: its formula divides by "
                              "beta",
                              loss_type_name(t)),
                  "use a positive --beta");

  // label_smoothing: dpo and cpo only.
  cfg.label_smoothing = args.label_smoothing.value_or(0.0);
  if (cfg.type == RlhfType::kDpo || cfg.type == RlhfType::kCpo) {
    const double eps = cfg.label_smoothing;
    if (eps < 0 || eps > 0.5)
      throw Error(fmt::format("--label_smoothing must be in [0, 0.5], got {}", eps),
                  "it is the probability that a preference label is flipped");
    if (eps == 0.5 && cfg.has(LossType::kRobust))
      throw Error(
          "--label_smoothing 0.5 is not allowed with loss_type robust: it divides by "
          "1 - 2 * label_smoothing",
          "use a value below 0.5 (the Robust DPO paper suggests 0.1)");
    const std::vector<LossType> ignoring =
        cfg.type == RlhfType::kDpo
            ? std::vector<LossType>{LossType::kHinge,    LossType::kIpo,     LossType::kBcoPair,
                                    LossType::kSppoHard, LossType::kNcaPair, LossType::kApoZero,
                                    LossType::kApoDown}
            : std::vector<LossType>{LossType::kHinge, LossType::kIpo};
    if (eps > 0)
      for (LossType t : cfg.loss_types)
        if (std::find(ignoring.begin(), ignoring.end(), t) != ignoring.end())
          warn(
              fmt::format("loss_type {} does not support label smoothing: --label_smoothing {} is "
                          "ignored for it",
                          loss_type_name(t), eps));
  } else {
    not_for_type(args.label_smoothing, "label_smoothing");
  }

  // DPO-only options.
  cfg.discopop_tau = args.discopop_tau.value_or(0.05);
  if (cfg.type == RlhfType::kDpo) {
    cfg.rpo_alpha = args.rpo_alpha;
    cfg.ld_alpha = args.ld_alpha;
    require_non_negative(cfg.rpo_alpha, "rpo_alpha", "it weights the chosen NLL added to the loss");
    if (cfg.ld_alpha && (*cfg.ld_alpha < 0 || *cfg.ld_alpha > 1))
      throw Error(fmt::format("--ld_alpha must be in [0, 1], got {}", *cfg.ld_alpha),
                  "1 weights the tokens past the shorter response fully (plain DPO), 0 drops them");
    if (cfg.has(LossType::kDiscopop) && cfg.discopop_tau <= 0)
      throw Error(fmt::format("--discopop_tau must be > 0 with loss_type discopop, got {}",
                              cfg.discopop_tau),
                  "the DiscoPOP paper uses 0.05");
  } else {
    not_for_type(args.rpo_alpha, "rpo_alpha");
    not_for_type(args.ld_alpha, "ld_alpha");
    not_for_type(args.discopop_tau, "discopop_tau");
  }

  // CPO / SimPO options.
  cfg.cpo_alpha = args.cpo_alpha.value_or(1.0);
  cfg.simpo_gamma = args.simpo_gamma.value_or(1.0);
  if (cfg.type == RlhfType::kCpo) {
    require_non_negative(args.cpo_alpha, "cpo_alpha",
                         "it weights the chosen NLL added to the loss");
    if (alphapo) cfg.cpo_alpha = 0;
    if (cfg.has(LossType::kSimpo) && cfg.cpo_alpha > 0)
      warn(
          fmt::format("cpo_alpha {} > 0 with loss_type simpo trains CPO-SimPO (the NLL term is "
                      "added); set --cpo_alpha 0 for pure SimPO",
                      cfg.cpo_alpha));
    if (!cfg.has(LossType::kSimpo)) not_for_type(args.simpo_gamma, "simpo_gamma");
  } else {
    not_for_type(args.cpo_alpha, "cpo_alpha");
    not_for_type(args.simpo_gamma, "simpo_gamma");
  }

  // KTO options.
  cfg.desirable_weight = args.desirable_weight.value_or(1.0);
  cfg.undesirable_weight = args.undesirable_weight.value_or(1.0);
  if (cfg.type == RlhfType::kKto) {
    require_non_negative(args.desirable_weight, "desirable_weight",
                         "it weights the loss of the desirable examples");
    require_non_negative(args.undesirable_weight, "undesirable_weight",
                         "it weights the loss of the undesirable examples");
  } else {
    not_for_type(args.desirable_weight, "desirable_weight");
    not_for_type(args.undesirable_weight, "undesirable_weight");
  }

  // RM options (its loss has no beta).
  if (cfg.type == RlhfType::kRm) {
    not_for_type(args.beta, "beta");
    cfg.center_rewards_coefficient = args.center_rewards_coefficient;
    require_non_negative(cfg.center_rewards_coefficient, "center_rewards_coefficient",
                         "it weights the penalty on (r_chosen + r_rejected)^2; 0.01 is typical");
  } else {
    not_for_type(args.center_rewards_coefficient, "center_rewards_coefficient");
  }
  return cfg;
}

}  // namespace swiftlet::rlhf
