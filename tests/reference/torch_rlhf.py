"""Independent reference for swiftlet's offline preference losses (src/rlhf/preference_loss.h):
DPO (every loss type, MPO mixtures, rpo_alpha, ld_alpha, label smoothing, bco_pair's running mean),
CPO / SimPO, ORPO, KTO and the reward-model loss, written from the specification of ms-swift 4.x behaviour (TRL 0.29 where ms-swift
inherits it; ms-swift bugs replaced by the intended semantics) in plain
PyTorch float64 (torch 1.13, no TRL), with gradients by autograd.

usage: torch_rlhf.py CASES_JSON OUT_JSON

CASES_JSON: {"cases": [case, ...]}, each case
  {"name": str, "kind": "pair" | "kto" | "rm",
   "args": {flag: value, ...}             # ms-swift flag names; an absent flag is unset
   "batches": [batch, ...]}               # micro-batches in order (bco_pair's state carries over)
  pair batch: {"chosen": [seq, ...], "rejected": [seq, ...]},
              seq = {"policy": [per-token logps], "reference": [...]} (no reference for cpo/orpo)
  kto batch:  {"examples": [{"policy", "reference", "kl_policy", "kl_reference": [...],
                             "desirable": bool, "logits_sum": float (optional)}, ...]}
  rm batch:   {"chosen": [score, ...], "rejected": [...], "margin": [...] (optional)}
  grpo batch: {"sequences": [{"policy", "old", "reference": [per-token logps], "advantage"}]};
              args: beta, epsilon, epsilon_high, loss_type grpo|bnpo|dr_grpo|dapo,
              max_completion_length, dapo_tokens (the step's completion tokens; 0: the batch's)
  grpo-adv batch: {"rewards": [...], "num_generations": G}; args: advantage_estimator,
              scale_rewards
  ppo batch:  {"responses": [{"logps", "ref_logps" (L_i), "values" (W), "score",
              "new_logps" (L_i), "new_values" (W)}]}; args: kl_coef, kl_estimator, gamma, lam,
              whiten_rewards, cliprange, cliprange_value, vf_coef (TRL 0.29 PPOTrainer's code)
OUT_JSON: {"results": [{"name", "batches": [{"loss", "metrics", grads}], ...}]}, grads being
  "d_chosen"/"d_rejected" (pair: per sequence, per token; rm: per pair) or "d_policy" (kto);
  kto results also hold "window" (the logged metrics of all batches as one logging window), pair
  results "bco_mean" (the running mean after the last batch).
"""
import json
import math
import sys

import torch
import torch.nn.functional as F

F64 = torch.float64


def resolve(args):
    """ms-swift's defaults per rlhf_type (validation is tested on the C++ side only)."""
    t = args.get("rlhf_type", "dpo")
    simpo = t == "simpo"
    if simpo:
        t = "cpo"
    loss = args.get("loss_type")
    if loss is None:
        loss = {"dpo": ["sigmoid"], "cpo": ["simpo" if simpo else "sigmoid"], "kto": ["kto"]}.get(t, [])
    cpo_alpha = args.get("cpo_alpha", 1.0)
    if t == "cpo" and loss == ["alphapo"]:
        loss, cpo_alpha = ["simpo"], 0.0
    weights = args.get("loss_weights") or [1.0] * len(loss)
    return {
        "type": t,
        "loss": list(loss),
        "weights": list(weights),
        "beta": args.get("beta", 2.0 if simpo else 0.1),
        "eps": args.get("label_smoothing", 0.0),
        "rpo_alpha": args.get("rpo_alpha"),
        "ld_alpha": args.get("ld_alpha"),
        "tau": args.get("discopop_tau", 0.05),
        "cpo_alpha": cpo_alpha,
        "gamma": args.get("simpo_gamma", 1.0),
        "dw": args.get("desirable_weight", 1.0),
        "uw": args.get("undesirable_weight", 1.0),
        "center": args.get("center_rewards_coefficient"),
    }


def leaves(seqs, key):
    return [torch.tensor(s[key], dtype=F64, requires_grad=(key == "policy")) for s in seqs]


def padded(tensors):
    """[B, T] values (0 past each length), [B, T] bool mask, [B] lengths."""
    vals = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
    lengths = torch.tensor([len(t) for t in tensors], dtype=F64)
    mask = torch.arange(vals.shape[1])[None, :] < lengths[:, None]
    return vals, mask, lengths


def dpo_losses(lt, c, pi_c, pi_r, rho_c, rho_r, nll, running):
    beta, eps = c["beta"], c["eps"]
    dc, dr = pi_c - rho_c, pi_r - rho_r
    z = dc - dr
    if lt == "sigmoid":
        return -(1 - eps) * F.logsigmoid(beta * z) - eps * F.logsigmoid(-beta * z)
    if lt == "robust":
        return (-(1 - eps) * F.logsigmoid(beta * z) + eps * F.logsigmoid(-beta * z)) / (1 - 2 * eps)
    if lt == "hinge":
        return torch.relu(1 - beta * z)
    if lt == "ipo":
        return (z - 1 / (2 * beta)) ** 2
    if lt == "exo_pair":
        e = eps if eps != 0 else 1e-3  # the replacement stays inside exo_pair (ms-swift leaks it into the other loss types)
        u = beta * z
        return torch.sigmoid(u) * (F.logsigmoid(u) - math.log(1 - e)) + torch.sigmoid(-u) * (
            F.logsigmoid(-u) - math.log(e))
    if lt == "nca_pair":
        return F.softplus(-beta * dc) + 0.5 * F.softplus(beta * dc) + 0.5 * F.softplus(beta * dr)
    if lt == "bco_pair":
        x = torch.cat([beta * dc, beta * dr]).mean().detach().item()
        # running mean of the batch scalar, updated before use
        total = running["count"] + 1
        running["mean"] = running["mean"] + (x - running["mean"]) * 1 / total
        running["count"] = total
        delta = running["mean"]
        return F.softplus(-(beta * dc - delta)) + F.softplus(beta * dr - delta)
    if lt == "sppo_hard":
        return (dc - 1 / (2 * beta)) ** 2 + (dr + 1 / (2 * beta)) ** 2
    if lt == "aot":
        d = torch.sort(pi_c - pi_r).values - torch.sort(rho_c - rho_r).values
        return (1 - eps) * F.softplus(-beta * d) + eps * F.softplus(beta * d)
    if lt == "aot_unpaired":
        d = torch.sort(dc).values - torch.sort(dr).values
        return (1 - eps) * F.softplus(-beta * d) + eps * F.softplus(beta * d)
    if lt == "apo_zero":
        return (1 - torch.sigmoid(beta * dc)) + torch.sigmoid(beta * dr)
    if lt == "apo_down":
        return torch.sigmoid(beta * dc) + (1 - torch.sigmoid(beta * z))
    if lt == "discopop":
        g = torch.sigmoid(beta * z / c["tau"])
        return (1 - g) * F.softplus(-beta * z) + g * torch.exp(-beta * z)
    if lt == "sft":
        return nll.expand(pi_c.shape[0])
    raise ValueError("unknown dpo loss type " + lt)


def grads(tensors):
    """Each leaf's gradient (zeros where the loss does not depend on it, e.g. sft's rejected)."""
    return [(t.grad if t.grad is not None else torch.zeros_like(t)).tolist() for t in tensors]


def log1mexp(x):
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def pair_batch(c, batch, running):
    t, beta = c["type"], c["beta"]
    pol_c, pol_r = leaves(batch["chosen"], "policy"), leaves(batch["rejected"], "policy")
    Pc, mc, nc = padded(pol_c)
    Pr, mr, nr = padded(pol_r)
    nll = -Pc[mc].sum() / mc.sum()  # token mean over all chosen label tokens, plain logps
    metrics = {}
    if t == "dpo":
        Rc, _, _ = padded(leaves(batch["chosen"], "reference"))
        Rr, _, _ = padded(leaves(batch["rejected"], "reference"))
        wc, wr = mc.to(F64), mr.to(F64)
        if c["ld_alpha"] is not None:  # LD-DPO on the policy only
            lp = torch.minimum(nc, nr)
            for w, m in ((wc, mc), (wr, mr)):
                pos = torch.arange(w.shape[1], dtype=F64)[None, :]
                tail = torch.full_like(w, c["ld_alpha"])  # float64: torch.where on scalars is f32
                w.copy_(torch.where(pos < lp[:, None], torch.ones_like(w), tail) * m)
        pi_c, pi_r = (Pc * wc).sum(-1), (Pr * wr).sum(-1)
        rho_c, rho_r = (Rc * mc).sum(-1), (Rr * mr).sum(-1)
        if "ipo" in c["loss"]:  # per-sequence means for policy and reference (not ms-swift's mis-broadcast division)
            pi_c, pi_r, rho_c, rho_r = pi_c / nc, pi_r / nr, rho_c / nc, rho_r / nr
        losses, rew_c, rew_r = 0, 0, 0
        for lt, w in zip(c["loss"], c["weights"]):
            losses = losses + w * dpo_losses(lt, c, pi_c, pi_r, rho_c, rho_r, nll, running)
            rew_c = rew_c + w * beta * (pi_c - rho_c).detach()
            rew_r = rew_r + w * beta * (pi_r - rho_r).detach()
        if c["rpo_alpha"] is not None:
            losses = losses + c["rpo_alpha"] * nll
        loss = losses.mean()
        if c["rpo_alpha"] is not None or "sft" in c["loss"]:
            metrics["nll_loss"] = nll.item()
    elif t == "cpo":
        lt = c["loss"][0]
        pi_c, pi_r = Pc.sum(-1), Pr.sum(-1)
        if lt in ("ipo", "simpo"):
            pi_c, pi_r = pi_c / nc, pi_r / nr
        z = pi_c - pi_r
        if lt == "simpo":
            z = z - c["gamma"] / beta
        eps = c["eps"]
        if lt in ("sigmoid", "simpo"):
            losses = -(1 - eps) * F.logsigmoid(beta * z) - eps * F.logsigmoid(-beta * z)
        elif lt == "hinge":
            losses = torch.relu(1 - beta * z)
        elif lt == "ipo":
            losses = (z - 1 / (2 * beta)) ** 2
        else:
            raise ValueError("unknown cpo loss type " + lt)
        cpo_nll = nll if c["cpo_alpha"] != 0 else torch.zeros((), dtype=F64)
        loss = losses.mean() + c["cpo_alpha"] * cpo_nll
        rew_c, rew_r = beta * pi_c.detach(), beta * pi_r.detach()
        metrics["nll_loss"] = cpo_nll.item()
    elif t == "orpo":
        pi_c, pi_r = Pc.sum(-1) / nc, Pr.sum(-1) / nr
        log_odds = (pi_c - pi_r) - (log1mexp(pi_c) - log1mexp(pi_r))
        ratio = F.logsigmoid(log_odds)
        loss = nll - (beta * ratio).mean()
        rew_c, rew_r = beta * pi_c.detach(), beta * pi_r.detach()
        metrics["nll_loss"] = nll.item()
        metrics["log_odds_ratio"] = ratio.mean().item()
        metrics["log_odds_chosen"] = log_odds.mean().item()
    else:
        raise ValueError("not a pair type: " + t)
    loss.backward()
    metrics["rewards/chosen"] = rew_c.mean().item()
    metrics["rewards/rejected"] = rew_r.mean().item()
    metrics["rewards/accuracies"] = (rew_c > rew_r).to(F64).mean().item()
    metrics["rewards/margins"] = (rew_c - rew_r).mean().item()
    metrics["logps/chosen"] = pi_c.detach().mean().item()
    metrics["logps/rejected"] = pi_r.detach().mean().item()
    return {
        "loss": loss.item(),
        "d_chosen": grads(pol_c),
        "d_rejected": grads(pol_r),
        "metrics": metrics,
    }


def kto_batch(c, batch):
    beta, ex = c["beta"], batch["examples"]
    pol = [torch.tensor(e["policy"], dtype=F64, requires_grad=True) for e in ex]
    pi = torch.stack([p.sum() for p in pol])
    rho = torch.tensor([sum(e["reference"]) for e in ex], dtype=F64)
    if c["loss"][0] == "kto":
        kl_p = torch.tensor([sum(e["kl_policy"]) for e in ex], dtype=F64)
        kl_r = torch.tensor([sum(e["kl_reference"]) for e in ex], dtype=F64)
        kl = (kl_p - kl_r).mean().clamp(min=0)
    else:
        kl = torch.zeros((), dtype=F64)
    des = torch.tensor([e["desirable"] for e in ex])
    ratio = pi - rho
    if c["loss"][0] == "kto":
        l_des = 1 - torch.sigmoid(beta * (ratio[des] - kl))
        l_und = 1 - torch.sigmoid(beta * (kl - ratio[~des]))
    else:  # apo_zero_unpaired
        l_des = 1 - torch.sigmoid(beta * ratio[des])
        l_und = torch.sigmoid(beta * ratio[~des])
    losses = torch.cat([c["dw"] * l_des, c["uw"] * l_und])
    loss = losses.nanmean()
    loss.backward()
    metrics = {"kl": kl.item()}
    for name, sel in (("chosen", des), ("rejected", ~des)):
        if int(sel.sum()) == 0:
            continue
        metrics["rewards/%s_sum" % name] = (beta * ratio.detach()[sel]).nansum().item()
        metrics["logps/%s_sum" % name] = pi.detach()[sel].nansum().item()
        idx = [i for i in range(len(ex)) if bool(sel[i])]
        if all("logits_sum" in ex[i] for i in idx):
            metrics["logits/%s_sum" % name] = torch.tensor(
                [ex[i]["logits_sum"] for i in idx], dtype=F64).nansum().item()
        metrics["count/%s" % name] = float(len(idx))
    return {"loss": loss.item(), "d_policy": grads(pol), "metrics": metrics}


def kto_window(batch_metrics):
    """Sums and counts over the window, then divided; kl averaged; margins last."""
    logs = {}
    for name in ("chosen", "rejected"):
        counts = [m["count/" + name] for m in batch_metrics if "count/" + name in m]
        if not counts:
            continue
        for metric in ("rewards", "logps", "logits"):
            key = "%s/%s_sum" % (metric, name)
            vals = [m[key] for m in batch_metrics if key in m]
            if vals:
                logs["%s/%s" % (metric, name)] = sum(vals) / sum(counts)
    if "rewards/chosen" in logs and "rewards/rejected" in logs:
        logs["rewards/margins"] = logs["rewards/chosen"] - logs["rewards/rejected"]
    logs["kl"] = sum(m["kl"] for m in batch_metrics) / len(batch_metrics)
    return logs


def rm_batch(c, batch):
    rc = torch.tensor(batch["chosen"], dtype=F64, requires_grad=True)
    rr = torch.tensor(batch["rejected"], dtype=F64, requires_grad=True)
    m = torch.tensor(batch["margin"], dtype=F64) if "margin" in batch else torch.zeros_like(rc)
    loss = -F.logsigmoid(rc - rr - m).mean()  # one margin per pair (not ms-swift's [B] x [B,1] broadcast)
    metrics = {}
    if c["center"] is not None:
        center = c["center"] * torch.mean((rc + rr) ** 2)
        loss = loss + center
        metrics["center_rewards_loss"] = center.item()
    loss.backward()
    metrics["rewards/chosen"] = rc.detach().mean().item()
    metrics["rewards/rejected"] = rr.detach().mean().item()
    metrics["rewards/accuracies"] = (rc > rr).to(F64).mean().item()
    metrics["rewards/margins"] = (rc - rr).detach().mean().item()
    return {"loss": loss.item(), "d_chosen": rc.grad.tolist(), "d_rejected": rr.grad.tolist(),
            "metrics": metrics}


def grpo_batch(args, batch):
    """ms-swift's _compute_loss_and_metrics on padded [B, T] tensors (RLHF-SPEC 7.3)."""
    beta = args.get("beta", 0.04)
    eps_low = args.get("epsilon", 0.2)
    eps_high = args.get("epsilon_high", eps_low)
    loss_type = args.get("loss_type", "grpo")
    L = args.get("max_completion_length", 512)
    seqs = batch["sequences"]
    x = leaves(seqs, "policy")
    xs, mask, lengths = padded(x)
    old, _, _ = padded([torch.tensor(s["old"], dtype=F64) for s in seqs])
    adv = torch.tensor([s["advantage"] for s in seqs], dtype=F64)[:, None]
    m = mask.to(F64)
    ratio = torch.exp(xs - old)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    metrics = {}
    if beta != 0:
        ref, _, _ = padded([torch.tensor(s["reference"], dtype=F64) for s in seqs])
        d = torch.clamp(ref - xs, -20, 20)
        kl = torch.clamp(torch.exp(d) - d - 1, -10, 10)
        per_token = per_token + beta * kl
        metrics["kl"] = ((kl * m).sum() / m.sum()).item()
    if loss_type == "grpo":
        loss = ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * m).sum() / m.sum().clamp(min=1)
    elif loss_type == "dr_grpo":
        loss = (per_token * m).sum() / (m.shape[0] * L)
    elif loss_type == "dapo":
        T = args.get("dapo_tokens", 0) or m.sum().item()
        loss = (per_token * m).sum() / T
    else:
        raise ValueError(loss_type)
    low = ((ratio < 1 - eps_low) & (adv < 0)).to(F64) * m
    high = ((ratio > 1 + eps_high) & (adv > 0)).to(F64) * m
    metrics["clip_ratio/low_mean"] = (low.sum() / m.sum()).item()
    metrics["clip_ratio/high_mean"] = (high.sum() / m.sum()).item()
    metrics["clip_ratio/region_mean"] = (((low + high) > 0).to(F64).sum() / m.sum()).item()
    loss.backward()
    return {"loss": loss.item(), "d_policy": grads(x), "metrics": metrics}


def grpo_adv_batch(args, batch):
    G = batch["num_generations"]
    est = args.get("advantage_estimator", "grpo")
    scale = args.get("scale_rewards", {"grpo": "group", "rloo": "none"}.get(est, "batch"))
    R = torch.tensor(batch["rewards"], dtype=F64).view(-1, G)
    mean = R.mean(-1, keepdim=True)
    std = R.std(-1, keepdim=True)  # unbiased
    a = R - mean
    if est == "rloo":
        a = a * G / (G - 1)
    if est == "reinforce_plus_plus":
        if scale == "batch":
            a = a / (a.flatten().std() + 1e-4)
        elif scale == "group":
            a = a / (a.std(-1, keepdim=True) + 1e-4)
    else:
        if scale == "group":
            a = a / (std + 1e-4)
        elif scale == "batch":
            a = a / (R.flatten().std() + 1e-4)
    reward_std = R.flatten().std().item() if scale == "batch" else std.mean().item()
    return {"advantages": a.flatten().tolist(), "reward": mean.mean().item(),
            "reward_std": reward_std,
            "frac_reward_zero_std": (std < 1e-8).to(F64).mean().item()}


INVALID_LOGPROB = 1.0


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def masked_whiten(x, mask, shift_mean=True):
    mean = masked_mean(x, mask)
    centered = x - mean
    n = float(mask.sum().item())  # a float64 Bessel factor (int / int would give float32)
    var = masked_mean(centered ** 2, mask) * (n / (n - 1))
    w = (x - mean) * torch.rsqrt(var + 1e-8)
    return w if shift_mean else w + mean


def ppo_batch(args, batch):
    """TRL 0.29 PPOTrainer.train: rewards, GAE, whitening, then one micro-batch's losses."""
    kl_coef = args.get("kl_coef", 0.05)
    gamma, lam = args.get("gamma", 1.0), args.get("lam", 0.95)
    cr, crv, vf_coef = args.get("cliprange", 0.2), args.get("cliprange_value", 0.2), args.get("vf_coef", 0.1)
    rs = batch["responses"]
    W = len(rs[0]["values"])
    B = len(rs)
    L = torch.tensor([len(r["logps"]) for r in rs])
    seq_len = L - 1  # TRL's sequence_lengths: index of the last kept token
    idx = torch.arange(W)[None, :].repeat(B, 1)
    padding_mask = idx > seq_len[:, None]
    seq_len_p1 = seq_len + 1
    padding_mask_p1 = idx > seq_len_p1[:, None]

    def pad(key, n):
        t = torch.full((B, n), INVALID_LOGPROB, dtype=F64)
        for i, r in enumerate(rs):
            t[i, :len(r[key])] = torch.tensor(r[key], dtype=F64)
        return t
    logprobs = pad("logps", W).masked_fill(padding_mask, INVALID_LOGPROB)
    ref_logprobs = pad("ref_logps", W).masked_fill(padding_mask, INVALID_LOGPROB)
    values = pad("values", W).masked_fill(padding_mask_p1, 0)
    scores = torch.tensor([r["score"] for r in rs], dtype=F64)
    logr = ref_logprobs - logprobs
    kl = -logr if args.get("kl_estimator", "k1") == "k1" else (logr.exp() - 1) - logr
    non_score_reward = -kl_coef * kl
    rewards = non_score_reward.clone()
    actual_end = torch.where(seq_len_p1 < W, seq_len_p1, seq_len)
    rewards[torch.arange(B), actual_end] += scores
    if args.get("whiten_rewards", False):
        rewards = masked_whiten(rewards, ~padding_mask_p1, shift_mean=False)
        rewards = rewards.masked_fill(padding_mask_p1, 0)
    lastgaelam = 0
    adv_rev = []
    for t in reversed(range(W)):
        nextvalues = values[:, t + 1] if t < W - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        adv_rev.append(lastgaelam)
    advantages = torch.stack(adv_rev[::-1], dim=1)
    returns = advantages + values
    advantages = masked_whiten(advantages, ~padding_mask).masked_fill(padding_mask, 0)

    new = [torch.tensor(r["new_logps"], dtype=F64, requires_grad=True) for r in rs]
    newv = [torch.tensor(r["new_values"], dtype=F64, requires_grad=True) for r in rs]
    new_logprobs = torch.stack([torch.cat([n, torch.full((W - len(n),), INVALID_LOGPROB, dtype=F64)]) for n in new])
    new_logprobs = new_logprobs.masked_fill(padding_mask, INVALID_LOGPROB)
    vpred = torch.stack(newv)
    vpredclipped = torch.clamp(vpred, values - crv, values + crv)
    vf1 = torch.square(vpred - returns)
    vf2 = torch.square(vpredclipped - returns)
    vf_loss = 0.5 * masked_mean(torch.max(vf1, vf2), ~padding_mask_p1)
    vf_clipfrac = masked_mean((vf2 > vf1).to(F64), ~padding_mask_p1)
    diff = new_logprobs - logprobs
    ratio = torch.exp(diff)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - cr, 1.0 + cr)
    pg_loss = masked_mean(torch.max(pg1, pg2), ~padding_mask)
    loss = pg_loss + vf_coef * vf_loss
    loss.backward()
    keep = lambda t: [t[i].tolist() for i in range(B)]
    return {"rewards": keep(rewards), "advantages": keep(advantages), "returns": keep(returns.detach()),
            "loss": loss.item(), "pg_loss": pg_loss.item(), "vf_loss": vf_loss.item(),
            "d_logps": grads(new), "d_values": grads(newv),
            "metrics": {"objective/kl": kl.sum(1).mean().item(),
                        "objective/non_score_reward": non_score_reward.sum(1).mean().item(),
                        "objective/scores": scores.mean().item(),
                        "policy/clipfrac_avg": masked_mean((pg2 > pg1).to(F64), ~padding_mask).item(),
                        "val/clipfrac_avg": vf_clipfrac.item(),
                        "policy/approxkl_avg": (0.5 * (diff ** 2).mean()).item()}}


def run_case(case):
    if case["kind"] == "ppo":
        return {"name": case["name"], "batches": [ppo_batch(case["args"], b) for b in case["batches"]]}
    if case["kind"] in ("grpo", "grpo-adv"):
        fn = grpo_batch if case["kind"] == "grpo" else grpo_adv_batch
        return {"name": case["name"], "batches": [fn(case["args"], b) for b in case["batches"]]}
    c = resolve(case["args"])
    out = {"name": case["name"], "batches": []}
    if case["kind"] == "pair":
        running = {"mean": 0.0, "count": 1e-24}
        for b in case["batches"]:
            out["batches"].append(pair_batch(c, b, running))
        out["bco_mean"] = running["mean"]
    elif case["kind"] == "kto":
        for b in case["batches"]:
            out["batches"].append(kto_batch(c, b))
        out["window"] = kto_window([b["metrics"] for b in out["batches"]])
    elif case["kind"] == "rm":
        for b in case["batches"]:
            out["batches"].append(rm_batch(c, b))
    else:
        raise ValueError("unknown kind " + case["kind"])
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        cases = json.load(f)["cases"]
    results = [run_case(case) for case in cases]
    with open(sys.argv[2], "w") as f:
        json.dump({"results": results}, f)


if __name__ == "__main__":
    main()
