#pragma once
// The flags of the offline preference types of `swiftlet rlhf` (--rlhf_type dpo, cpo, simpo, orpo,
// kto, rm) resolved to the numbers the losses in rlhf/preference_loss.h use, with ms-swift's
// defaults per type and a swiftlet::Error for every value that cannot give a meaningful loss.
//   RlhfArgs raw;  raw.rlhf_type = "simpo";          // as parsed; unset flags stay nullopt
//   PreferenceConfig cfg = resolve_config(raw);      // cpo + loss simpo, beta 2.0, gamma 1.0, ...
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace swiftlet::rlhf {

// `simpo` is not a type of its own: it resolves to kCpo with loss type kSimpo.
enum class RlhfType { kDpo, kCpo, kOrpo, kKto, kRm };

enum class LossType {
  // dpo
  kSigmoid,  // also cpo
  kRobust,
  kHinge,  // also cpo
  kIpo,    // also cpo
  kExoPair,
  kNcaPair,
  kBcoPair,
  kSppoHard,
  kAot,
  kAotUnpaired,
  kApoZero,
  kApoDown,
  kDiscopop,
  kSft,
  // cpo
  kSimpo,
  // kto
  kKto,
  kApoZeroUnpaired,
};

// The flag spelling: "sigmoid", "exo_pair", "apo_zero_unpaired", ...
std::string_view loss_type_name(LossType t);
std::string_view rlhf_type_name(RlhfType t);

// Flag values as given on the command line; nullopt = the flag was not given (ms-swift's None or
// its dataclass default), so that a default can depend on the type and a flag that does not apply
// to the type can be reported.
struct RlhfArgs {
  std::string rlhf_type = "dpo";  // dpo | orpo | simpo | cpo | kto | rm
  std::optional<double> beta;
  std::optional<std::vector<std::string>> loss_type;  // several values only for dpo (MPO)
  std::optional<std::vector<double>> loss_weights;    // dpo only, one per loss_type
  std::optional<double> label_smoothing;              // 0
  std::optional<double> rpo_alpha;                    // dpo: weight of the chosen NLL; None = off
  std::optional<double> ld_alpha;                     // dpo: LD-DPO weight of the verbose suffix
  std::optional<double> discopop_tau;                 // 0.05
  std::optional<double> cpo_alpha;                    // 1.0
  std::optional<double> simpo_gamma;                  // 1.0
  std::optional<double> desirable_weight;             // 1.0
  std::optional<double> undesirable_weight;           // 1.0
  std::optional<double> center_rewards_coefficient;   // rm; None = no centering term
};

struct PreferenceConfig {
  RlhfType type = RlhfType::kDpo;
  // dpo: one or more (MPO); cpo: exactly one; kto: exactly one; orpo, rm: empty.
  std::vector<LossType> loss_types;
  // One per loss type (1.0 each unless --loss_weights gave them).
  std::vector<double> loss_weights;
  double beta = 0.1;
  // As given. exo_pair uses 1e-3 in its own formula when this is 0 (see pair_loss).
  double label_smoothing = 0;
  std::optional<double> rpo_alpha;
  std::optional<double> ld_alpha;
  double discopop_tau = 0.05;
  double cpo_alpha = 1.0;
  double simpo_gamma = 1.0;
  double desirable_weight = 1.0;
  double undesirable_weight = 1.0;
  std::optional<double> center_rewards_coefficient;
  // What resolve_config warned about (also logged): ignored label smoothing, CPO-SimPO, flags that
  // do not apply to the type.
  std::vector<std::string> warnings;

  bool has(LossType t) const;
};

// ms-swift's RLHFArguments resolution for the offline types (RLHFArguments.__post_init__):
//  * simpo -> cpo with loss_type simpo (if unset) and beta 2.0 (if unset); cpo's `alphapo` is
//    TRL's alias for simpo with cpo_alpha 0;
//  * beta 0.1 otherwise; loss_type sigmoid (dpo, cpo), kto (kto);
//  * several loss types only for dpo, where --loss_weights (if given) must match them in length;
//  * label_smoothing > 0 is ignored with a warning for dpo hinge, ipo, bco_pair, sppo_hard,
//    nca_pair, apo_zero, apo_down and cpo hinge, ipo;
//  * cpo_alpha > 0 with simpo warns that this is CPO-SimPO.
// Throws Error naming the flag for what ms-swift rejects (an unknown rlhf_type or loss_type for the
// type, kto_pair, several loss types or --loss_weights outside dpo, a loss_weights length
// mismatch) and for values that make the loss undefined or meaningless: non-finite values,
// beta < 0, beta = 0 where a formula divides by it (ipo, sppo_hard, simpo), label_smoothing outside
// [0, 0.5] (robust: [0, 0.5)), discopop_tau <= 0 with discopop, ld_alpha outside [0, 1], negative
// rpo_alpha, cpo_alpha, KTO weights or center_rewards_coefficient.
PreferenceConfig resolve_config(const RlhfArgs& args);

}  // namespace swiftlet::rlhf
