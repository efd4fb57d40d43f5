#pragma once
// Loss, gradient and logged metrics of one micro-batch for the offline preference types of
// `swiftlet rlhf` (ms-swift 4.x semantics, TRL 0.29 where ms-swift inherits it), on numbers the
// model already computed: per-token log-probs of each sequence's label tokens (pair types, KTO) or
// one scalar score per sequence (RM).
//
// What the caller does around these functions:
//  * loss: a mean over the micro-batch's pairs / examples plus the extra terms below; averaging
//    over gradient-accumulation micro-batches (loss / GAS) and over ranks is the trainer's job.
//  * gradients: d loss / d (each policy per-token log-prob), in the layout of the input; this is
//    what the model backward consumes (through its log-softmax). Reference log-probs and KTO's
//    mismatched-completion log-probs get no gradient (computed under no_grad).
//  * metrics: ms-swift's names for one micro-batch. The trainer averages them over the
//    micro-batches of a logging window (KTO: see kto_window_metrics), adds the "eval_" prefix for
//    evaluation and gathers over ranks. Not computed here because they need the logits: DPO
//    `logits/chosen|rejected` (mean over the half's label positions of the vocabulary-mean logit),
//    CPO `logits/*` (mean of the whole logits tensor of the half, every position incl. prompt and
//    padding), ORPO `logits/*` (same, last position dropped), KTO `logits/*` (pass logits_sum in
//    KtoExample), and `aux_loss` of MoE models.
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "rlhf/preference_config.h"

namespace swiftlet::rlhf {

// The label-token log-probs of one sequence, in token order: `policy` from the trained network,
// `reference` from the reference network on the same tokens (same length; dpo and kto only, empty
// for cpo, simpo and orpo, which have no reference model). Plain per-token values: the functions
// below apply IPO/SimPO/ORPO length normalisation and LD-DPO weighting themselves.
struct SequenceLogps {
  std::vector<double> policy;
  std::vector<double> reference;
};

// The mean over data-parallel ranks of a per-rank scalar (an all-reduce); empty = one rank.
// Used where ms-swift reduces inside the loss: bco_pair's running mean and KTO's KL estimate.
using RankMean = std::function<double(double)>;

// bco_pair's δ: the running mean of the per-micro-batch scalar mean([βΔc; βΔr]) (TRL's
// RunningMoments with one value per update; count starts at 1e-24). With several ranks each update
// takes the mean over ranks, which gives the same mean as one rank seeing their average.
struct BcoRunningMean {
  double mean = 0;
  double count = 1e-24;
  void update(double batch_mean) {
    const double total = count + 1;
    mean += (batch_mean - mean) / total;
    count = total;
  }
};

// What pair_loss carries from one micro-batch to the next. Save it with the checkpoint so that a
// resumed run continues exactly (doubles are written with 17 significant digits).
struct PairLossState {
  BcoRunningMean bco;
  nlohmann::json to_json() const;
  static PairLossState from_json(const nlohmann::json& j);  // Error when malformed
};

struct PairLossResult {
  double loss = 0;
  // d loss / d chosen[i].policy[t] and rejected[i].policy[t].
  std::vector<std::vector<double>> d_chosen, d_rejected;
  std::map<std::string, double> metrics;
};

// dpo (every loss type, MPO weights, rpo_alpha, ld_alpha), cpo/simpo and orpo on B pairs
// (chosen[i], rejected[i]). Per pair, π = the policy sequence logp and ρ the reference one:
//  * sums over the label tokens; per-sequence means instead for dpo when ipo is one of the loss
//    types (policy and reference, for every loss type of the mix, as TRL does), cpo ipo/simpo,
//    and orpo;
//  * ld_alpha (dpo): the policy only (TRL 0.29 also re-weights the reference; ms-swift does not):
//    π = Σ first l_p tokens + ld_alpha · Σ rest, l_p = min(|chosen|, |rejected|) of the pair.
//  * NLL = −(Σ chosen label-token logps of the micro-batch) / (their count): a token mean, never
//    length-normalised or LD-weighted. dpo adds rpo_alpha·NLL (and `sft` is NLL per pair), cpo
//    cpo_alpha·NLL (not computed when cpo_alpha is 0: nll_loss logs 0), orpo NLL.
// loss = mean over pairs of Σ_k w_k·loss_k (dpo), of the cpo loss (cpo), or −β·mean log σ(log
// odds) (orpo), plus the NLL term. Metrics: rewards/chosen, rewards/rejected, rewards/accuracies,
// rewards/margins, logps/chosen, logps/rejected (means of π over pairs), nll_loss (dpo: with
// rpo_alpha or sft only), orpo also log_odds_ratio and log_odds_chosen. dpo rewards are
// Σ_k w_k·β(π−ρ), cpo β·π, orpo β·π.
// bco_pair updates state.bco before using it. Throws Error when a sequence has no label tokens;
// mismatched sizes are internal errors.
PairLossResult pair_loss(const PreferenceConfig& cfg, std::span<const SequenceLogps> chosen,
                         std::span<const SequenceLogps> rejected, PairLossState& state,
                         const RankMean& ranks = {});

// One KTO example: a prompt x with its completion y and the desirability label, plus the
// mismatched completion y′ that kto's KL estimate needs.
struct KtoExample {
  // Policy and reference label-token logps of (x, y).
  SequenceLogps completion;
  // Policy (under no_grad: no gradient flows here) and reference label-token logps of (x, y′), y′
  // the final assistant reply of another row: inside each chunk of global_batch_size rows of the
  // shuffled dataset, row i takes row i−1's reply (row 0 the chunk's last row's), as ms-swift's
  // prepare_kto_dataset; prepared with the dataset. Needed for loss type kto; ignored (may be
  // empty) for apo_zero_unpaired.
  SequenceLogps kl_completion;
  bool desirable = true;
  // Σ over label tokens of Σ over the vocabulary of the policy logits of (x, y), when the caller
  // wants ms-swift's `logits/chosen|rejected` (sums over tokens × vocabulary, so values in the
  // millions; a known confusion of ms-swift's).
  std::optional<double> logits_sum;
};

struct KtoLossResult {
  double loss = 0;
  std::vector<std::vector<double>> d_policy;  // d loss / d examples[i].completion.policy[t]
  // For one micro-batch, as TRL stores them: kl; and for each side present in the micro-batch
  // rewards/chosen_sum, logps/chosen_sum, (logits/chosen_sum), count/chosen (rejected alike).
  // Turn a window of them into the logged names with kto_window_metrics.
  std::map<std::string, double> metrics;
};

// KL = max(0, ranks(mean over the micro-batch of Σ kl_completion.policy − Σ
// kl_completion.reference)) (0 for apo_zero_unpaired); Δ = Σ completion.policy − Σ
// completion.reference. kto: desirable 1 − σ(β(Δ − KL)), undesirable 1 − σ(β(KL − Δ));
// apo_zero_unpaired: desirable 1 − σ(βΔ), undesirable σ(βΔ); times desirable_weight /
// undesirable_weight; loss = mean over the examples whose loss is not NaN (TRL's nanmean).
KtoLossResult kto_loss(const PreferenceConfig& cfg, std::span<const KtoExample> examples,
                       const RankMean& ranks = {});

// KTO's logged metrics for a logging window: `summed` holds, per name, the sum over the window's
// micro-batches of kto_loss's metrics (the *_sum and count/* entries also summed over ranks; kl
// is already the same mean on every rank), `micro_batches` how many were summed. Gives kl
// (mean over micro-batches), rewards|logps|logits/chosen|rejected = Σ *_sum / Σ count (a side
// only when it occurred), rewards/margins = rewards/chosen − rewards/rejected (both present).
std::map<std::string, double> kto_window_metrics(const std::map<std::string, double>& summed,
                                                 int64_t micro_batches);

// TRL's dataset-time warning for unbalanced KTO data (ms-swift's prepare_kto_dataset), or nullopt:
// with n_D ≠ n_U it fires unless desirable_weight ∈ [n_U·uw/n_D, 1.33·n_U·uw/n_D] or
// undesirable_weight ∈ [n_D·dw/(1.33·n_U), n_D·dw/n_U] (bounds rounded to 2 decimals), for every
// loss type. (The dataset-time error for a global batch size <= 1 belongs to the KL pairing.)
std::optional<std::string> kto_weight_warning(const PreferenceConfig& cfg, int64_t num_desirable,
                                              int64_t num_undesirable);

struct RewardLossResult {
  double loss = 0;
  std::vector<double> d_chosen, d_rejected;  // d loss / d each pair's chosen / rejected score
  std::map<std::string, double> metrics;
};

// rm on B pairs of scalar scores (the score head at each sequence's last non-pad token):
// loss = mean softplus(−(r_c − r_r − m)) + λ·mean (r_c + r_r)², m = margins[i] (empty span: no
// margins; a row without a margin passes 0), λ = center_rewards_coefficient (unset: no term).
// One margin per pair, the intended semantics: ms-swift main broadcasts [B] margins against [B,1]
// rewards (every pair against every margin) and drops rows without one, misaligning the rest.
// Metrics: rewards/chosen, rewards/rejected (mean scores), rewards/accuracies (mean [r_c > r_r]),
// rewards/margins (mean r_c − r_r), center_rewards_loss (λ·mean (r_c + r_r)², only with λ set).
RewardLossResult reward_loss(const PreferenceConfig& cfg, std::span<const double> chosen,
                             std::span<const double> rejected,
                             std::span<const double> margins = {});

}  // namespace swiftlet::rlhf
