// Pair losses (dpo, cpo/simpo, orpo) and the bco_pair state. KTO and RM: kto_reward_loss.cc.
#include "rlhf/preference_loss.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "rlhf/loss_math.h"

namespace swiftlet::rlhf {
namespace {

// One sequence's scalar logp π (or ρ) and dπ/d logp_t for every policy token.
struct SequenceValue {
  double policy = 0, reference = 0;
  std::vector<double> dpolicy;  // dπ / d policy[t]
};

// Σ_t c_t·logp_t with c_t = 1 for the first `prefix` tokens and `tail_weight` after them (LD-DPO),
// divided by the length when `mean` (IPO, SimPO, ORPO). The reference is a plain sum (or mean).
SequenceValue sequence_value(const SequenceLogps& s, size_t prefix, double tail_weight, bool mean) {
  SequenceValue v;
  const size_t n = s.policy.size();
  const double scale = mean ? 1.0 / double(n) : 1.0;
  v.dpolicy.resize(n);
  for (size_t t = 0; t < n; ++t) {
    v.dpolicy[t] = (t < prefix ? 1.0 : tail_weight) * scale;
    v.policy += s.policy[t] * v.dpolicy[t];
  }
  double ref = 0;
  for (double x : s.reference) ref += x;
  v.reference = mean && !s.reference.empty() ? ref / double(s.reference.size()) : ref;
  return v;
}

// Σ over the batch of one DPO loss type, and its derivatives by each pair's Δc = π_c − ρ_c and
// Δr = π_r − ρ_r (equivalently by π_c and π_r: the reference is constant).
struct BatchTerm {
  double sum = 0;
  std::vector<double> dc, dr;
};

double mean_of(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
}

// (1−ε)·softplus(−βd) + ε·softplus(βd) and its derivative by d.
std::pair<double, double> smoothed_sigmoid(double d, double beta, double eps) {
  const double u = beta * d;
  return {(1 - eps) * softplus(-u) + eps * softplus(u),
          beta * (-(1 - eps) * sigmoid(-u) + eps * sigmoid(u))};
}

// Indices that sort `v` ascending (torch.sort; ties keep input order).
std::vector<size_t> argsort(const std::vector<double>& v) {
  std::vector<size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), size_t(0));
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  return idx;
}

BatchTerm dpo_term(LossType type, const PreferenceConfig& cfg, const std::vector<double>& pc,
                   const std::vector<double>& pr, const std::vector<double>& rc,
                   const std::vector<double>& rr, PairLossState& state, const RankMean& ranks) {
  const size_t B = pc.size();
  const double beta = cfg.beta, eps = cfg.label_smoothing;
  BatchTerm out;
  out.dc.assign(B, 0.0);
  out.dr.assign(B, 0.0);
  // Per-pair losses of z = Δc − Δr: ℓ(z) and dℓ/dz.
  auto of_z = [&](auto&& f) {
    for (size_t i = 0; i < B; ++i) {
      const double z = (pc[i] - rc[i]) - (pr[i] - rr[i]);
      const auto [l, dz] = f(z);
      out.sum += l;
      out.dc[i] = dz;
      out.dr[i] = -dz;
    }
  };
  // Per-pair losses of (Δc, Δr) separately: ℓ and (dℓ/dΔc, dℓ/dΔr).
  auto of_deltas = [&](auto&& f) {
    for (size_t i = 0; i < B; ++i) {
      const auto [l, a, b] = f(pc[i] - rc[i], pr[i] - rr[i]);
      out.sum += l;
      out.dc[i] = a;
      out.dr[i] = b;
    }
  };
  switch (type) {
    case LossType::kSigmoid:
      of_z([&](double z) { return smoothed_sigmoid(z, beta, eps); });
      break;
    case LossType::kRobust:
      of_z([&](double z) {
        const double u = beta * z;
        return std::pair{((1 - eps) * softplus(-u) - eps * softplus(u)) / (1 - 2 * eps),
                         beta * (-(1 - eps) * sigmoid(-u) - eps * sigmoid(u)) / (1 - 2 * eps)};
      });
      break;
    case LossType::kHinge:
      of_z([&](double z) {
        const double m = 1 - beta * z;
        return m > 0 ? std::pair{m, -beta} : std::pair{0.0, 0.0};  // relu'(0) = 0, as torch
      });
      break;
    case LossType::kIpo:
      // z here comes from per-sequence mean logps (ms-swift main divides the [2B, T]
      // per-token tensor by a [2B] vector, which broadcasts along the wrong axis; TRL's intended
      // per-sequence mean is what sequence_value computes).
      of_z([&](double z) {
        const double d = z - 1 / (2 * beta);
        return std::pair{d * d, 2 * d};
      });
      break;
    case LossType::kExoPair: {
      // ms-swift replaces label_smoothing 0 by 1e-3 on the trainer for good, which then leaks
      // into every other loss type of an MPO mix, a bug; the intended semantics is
      // the replacement inside exo_pair only.
      const double e = eps == 0 ? 1e-3 : eps;
      const double log_ratio = std::log(1 - e) - std::log(e);
      of_z([&](double z) {
        const double u = beta * z, s = sigmoid(u), sn = sigmoid(-u);
        const double l =
            s * (log_sigmoid(u) - std::log(1 - e)) + sn * (log_sigmoid(-u) - std::log(e));
        return std::pair{l, beta * s * sn * (u - log_ratio)};  // d/du: σ(u)σ(−u)(u − log((1−e)/e))
      });
      break;
    }
    case LossType::kNcaPair:
      of_deltas([&](double dc, double dr) {
        const double c = beta * dc, r = beta * dr;
        return std::tuple{softplus(-c) + 0.5 * softplus(c) + 0.5 * softplus(r),
                          beta * (-sigmoid(-c) + 0.5 * sigmoid(c)), beta * 0.5 * sigmoid(r)};
      });
      break;
    case LossType::kBcoPair: {
      // δ: running mean of mean([βΔc; βΔr]) over the micro-batches so far, this one included.
      double batch = 0;
      for (size_t i = 0; i < B; ++i) batch += beta * (pc[i] - rc[i]) + beta * (pr[i] - rr[i]);
      batch /= double(2 * B);
      state.bco.update(ranks ? ranks(batch) : batch);
      const double delta = state.bco.mean;
      of_deltas([&](double dc, double dr) {
        const double c = beta * dc - delta, r = beta * dr - delta;
        return std::tuple{softplus(-c) + softplus(r), -beta * sigmoid(-c), beta * sigmoid(r)};
      });
      break;
    }
    case LossType::kSppoHard:
      of_deltas([&](double dc, double dr) {
        const double a = dc - 0.5 / beta, b = dr + 0.5 / beta;
        return std::tuple{a * a + b * b, 2 * a, 2 * b};
      });
      break;
    case LossType::kAot:
    case LossType::kAotUnpaired: {
      // Paired: sort π_c−π_r and ρ_c−ρ_r independently; unpaired: sort Δc and Δr. The loss of
      // rank j flows back to the pairs holding rank j in each sorted list.
      std::vector<double> x(B), y(B);
      for (size_t i = 0; i < B; ++i) {
        x[i] = type == LossType::kAot ? pc[i] - pr[i] : pc[i] - rc[i];
        y[i] = type == LossType::kAot ? rc[i] - rr[i] : pr[i] - rr[i];
      }
      const std::vector<size_t> sx = argsort(x), sy = argsort(y);
      for (size_t j = 0; j < B; ++j) {
        const auto [l, dd] = smoothed_sigmoid(x[sx[j]] - y[sy[j]], beta, eps);
        out.sum += l;
        if (type == LossType::kAot) {  // x = π_c − π_r; y has no policy term
          out.dc[sx[j]] += dd;
          out.dr[sx[j]] -= dd;
        } else {  // x = Δc, y = Δr
          out.dc[sx[j]] += dd;
          out.dr[sy[j]] -= dd;
        }
      }
      break;
    }
    case LossType::kApoZero:
      of_deltas([&](double dc, double dr) {
        const double sc = sigmoid(beta * dc), sr = sigmoid(beta * dr);
        return std::tuple{(1 - sc) + sr, -beta * sc * (1 - sc), beta * sr * (1 - sr)};
      });
      break;
    case LossType::kApoDown:
      of_deltas([&](double dc, double dr) {
        const double sc = sigmoid(beta * dc), sz = sigmoid(beta * (dc - dr));
        return std::tuple{sc + (1 - sz), beta * sc * (1 - sc) - beta * sz * (1 - sz),
                          beta * sz * (1 - sz)};
      });
      break;
    case LossType::kDiscopop: {
      const double tau = cfg.discopop_tau;
      of_z([&](double z) {
        // L = βz, g = σ(L/τ): (1−g)·softplus(−L) + g·e^{−L}; g is not detached.
        const double L = beta * z, g = sigmoid(L / tau), dg = g * (1 - g) / tau;
        const double logistic = softplus(-L), expo = std::exp(-L);
        const double dL = dg * (expo - logistic) - (1 - g) * sigmoid(-L) - g * expo;
        return std::pair{(1 - g) * logistic + g * expo, beta * dL};
      });
      break;
    }
    default:
      SWIFTLET_CHECK(false, "dpo_term: loss type {} is not a dpo loss", loss_type_name(type));
  }
  return out;
}

void check_sequences(std::span<const SequenceLogps> seqs, const char* side, bool with_reference) {
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (seqs[i].policy.empty())
      throw Error(fmt::format("pair {}: the {} response has no label tokens", i, side),
                  "it was probably truncated away; raise --max_length or drop the row");
    if (with_reference) {
      SWIFTLET_CHECK(seqs[i].reference.size() == seqs[i].policy.size(),
                     "pair_loss: pair {} {}: {} reference logps for {} policy logps", i, side,
                     seqs[i].reference.size(), seqs[i].policy.size());
    } else {
      SWIFTLET_CHECK(seqs[i].reference.empty(),
                     "pair_loss: pair {} {}: reference logps given to a reference-free type", i,
                     side);
    }
  }
}

}  // namespace

nlohmann::json PairLossState::to_json() const {
  return {{"bco_running_mean", bco.mean}, {"bco_running_count", bco.count}};
}

PairLossState PairLossState::from_json(const nlohmann::json& j) {
  PairLossState s;
  for (auto [key, field] :
       {std::pair{"bco_running_mean", &s.bco.mean}, std::pair{"bco_running_count", &s.bco.count}}) {
    if (!j.is_object() || !j.contains(key) || !j[key].is_number())
      throw Error(fmt::format("preference loss state: field {} is missing or not a number", key),
                  "the checkpoint's state was not written by this version of swiftlet");
    *field = j[key].get<double>();
  }
  return s;
}

PairLossResult pair_loss(const PreferenceConfig& cfg, std::span<const SequenceLogps> chosen,
                         std::span<const SequenceLogps> rejected, PairLossState& state,
                         const RankMean& ranks) {
  SWIFTLET_CHECK(
      cfg.type == RlhfType::kDpo || cfg.type == RlhfType::kCpo || cfg.type == RlhfType::kOrpo,
      "pair_loss: rlhf_type {} is not a pair type", rlhf_type_name(cfg.type));
  SWIFTLET_CHECK(!chosen.empty() && chosen.size() == rejected.size(),
                 "pair_loss: {} chosen and {} rejected sequences", chosen.size(), rejected.size());
  const bool dpo = cfg.type == RlhfType::kDpo, cpo = cfg.type == RlhfType::kCpo;
  check_sequences(chosen, "chosen", dpo);
  check_sequences(rejected, "rejected", dpo);
  const size_t B = chosen.size();
  const double beta = cfg.beta;

  // Sequence logps.
  const bool mean = dpo   ? cfg.has(LossType::kIpo)
                    : cpo ? cfg.has(LossType::kIpo) || cfg.has(LossType::kSimpo)
                          : true;
  std::vector<SequenceValue> vc(B), vr(B);
  for (size_t i = 0; i < B; ++i) {
    size_t prefix = SIZE_MAX;
    double tail = 1.0;
    if (dpo && cfg.ld_alpha) {
      prefix = std::min(chosen[i].policy.size(), rejected[i].policy.size());
      tail = *cfg.ld_alpha;
    }
    vc[i] = sequence_value(chosen[i], prefix, tail, mean);
    vr[i] = sequence_value(rejected[i], prefix, tail, mean);
  }
  std::vector<double> pc(B), pr(B), rc(B), rr(B);
  for (size_t i = 0; i < B; ++i) {
    pc[i] = vc[i].policy;
    pr[i] = vr[i].policy;
    rc[i] = vc[i].reference;
    rr[i] = vr[i].reference;
  }

  // The chosen NLL: a token mean over every chosen label token of the micro-batch.
  double nll_sum = 0;
  size_t nll_tokens = 0;
  for (const SequenceLogps& s : chosen) {
    for (double x : s.policy) nll_sum -= x;
    nll_tokens += s.policy.size();
  }
  const double nll = nll_sum / double(nll_tokens);

  // loss = Σ_i (per-pair terms) / B + nll_weight · NLL; gc, gr = d loss / d π_c, π_r.
  PairLossResult res;
  std::vector<double> gc(B, 0.0), gr(B, 0.0);
  std::vector<double> chosen_reward(B), rejected_reward(B);
  double nll_weight = 0;
  bool log_nll = true;
  if (dpo) {
    double weight_sum = 0;
    for (size_t k = 0; k < cfg.loss_types.size(); ++k) {
      const double w = cfg.loss_weights[k];
      weight_sum += w;
      if (cfg.loss_types[k] == LossType::kSft) {  // the chosen NLL broadcast to every pair
        res.loss += w * nll;
        nll_weight += w;
        continue;
      }
      const BatchTerm t = dpo_term(cfg.loss_types[k], cfg, pc, pr, rc, rr, state, ranks);
      res.loss += w * t.sum / double(B);
      for (size_t i = 0; i < B; ++i) {
        gc[i] += w * t.dc[i] / double(B);
        gr[i] += w * t.dr[i] / double(B);
      }
    }
    if (cfg.rpo_alpha) {
      res.loss += *cfg.rpo_alpha * nll;
      nll_weight += *cfg.rpo_alpha;
    }
    log_nll = cfg.rpo_alpha.has_value() || cfg.has(LossType::kSft);
    // With MPO the logged rewards are the weight-sum Σ_k w_k·β(π − ρ).
    for (size_t i = 0; i < B; ++i) {
      chosen_reward[i] = weight_sum * beta * (pc[i] - rc[i]);
      rejected_reward[i] = weight_sum * beta * (pr[i] - rr[i]);
    }
  } else if (cpo) {
    const LossType type = cfg.loss_types.at(0);
    const double eps = cfg.label_smoothing;  // hinge and ipo ignore it
    for (size_t i = 0; i < B; ++i) {
      double z = pc[i] - pr[i];
      if (type == LossType::kSimpo) z -= cfg.simpo_gamma / beta;
      double l, dz;
      if (type == LossType::kHinge) {
        const double m = 1 - beta * z;
        l = m > 0 ? m : 0;
        dz = m > 0 ? -beta : 0;
      } else if (type == LossType::kIpo) {
        const double d = z - 1 / (2 * beta);
        l = d * d;
        dz = 2 * d;
      } else {  // sigmoid, simpo
        std::tie(l, dz) = smoothed_sigmoid(z, beta, eps);
      }
      res.loss += l / double(B);
      gc[i] = dz / double(B);
      gr[i] = -dz / double(B);
      chosen_reward[i] = beta * pc[i];
      rejected_reward[i] = beta * pr[i];
    }
    if (cfg.cpo_alpha != 0) {
      res.loss += cfg.cpo_alpha * nll;
      nll_weight = cfg.cpo_alpha;
    }
  } else {  // orpo: NLL − β·mean log σ(log_odds) on per-token mean logps
    nll_weight = 1;
    res.loss = nll;
    double ratio_sum = 0, odds_sum = 0;
    for (size_t i = 0; i < B; ++i) {
      const double c = pc[i], r = pr[i];
      const double odds = (c - r) - (log1mexp(c) - log1mexp(r));
      const double ratio = log_sigmoid(odds);
      ratio_sum += ratio;
      odds_sum += odds;
      res.loss -= beta * ratio / double(B);
      // d log_odds / dc = 1 / (1 − e^c); d log σ(x)/dx = σ(−x).
      const double g = -beta * sigmoid(-odds) / double(B);
      gc[i] = g / -std::expm1(c);
      gr[i] = -g / -std::expm1(r);
      chosen_reward[i] = beta * c;
      rejected_reward[i] = beta * r;
    }
    res.metrics["log_odds_ratio"] = ratio_sum / double(B);
    res.metrics["log_odds_chosen"] = odds_sum / double(B);
  }

  // Per-token gradients: dπ/d logp_t times d loss/dπ, plus the NLL's −1/N on chosen tokens.
  res.d_chosen.resize(B);
  res.d_rejected.resize(B);
  const double dnll = -nll_weight / double(nll_tokens);
  for (size_t i = 0; i < B; ++i) {
    res.d_chosen[i].resize(vc[i].dpolicy.size());
    for (size_t t = 0; t < vc[i].dpolicy.size(); ++t)
      res.d_chosen[i][t] = gc[i] * vc[i].dpolicy[t] + dnll;
    res.d_rejected[i].resize(vr[i].dpolicy.size());
    for (size_t t = 0; t < vr[i].dpolicy.size(); ++t)
      res.d_rejected[i][t] = gr[i] * vr[i].dpolicy[t];
  }

  std::vector<double> accurate(B), margin(B);
  for (size_t i = 0; i < B; ++i) {
    accurate[i] = chosen_reward[i] > rejected_reward[i] ? 1.0 : 0.0;
    margin[i] = chosen_reward[i] - rejected_reward[i];
  }
  res.metrics["rewards/chosen"] = mean_of(chosen_reward);
  res.metrics["rewards/rejected"] = mean_of(rejected_reward);
  res.metrics["rewards/accuracies"] = mean_of(accurate);
  res.metrics["rewards/margins"] = mean_of(margin);
  res.metrics["logps/chosen"] = mean_of(pc);
  res.metrics["logps/rejected"] = mean_of(pr);
  if (log_nll) res.metrics["nll_loss"] = cpo && cfg.cpo_alpha == 0 ? 0.0 : nll;
  return res;
}

}  // namespace swiftlet::rlhf
