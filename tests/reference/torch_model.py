"""Independent reference for swiftlet's transformer: a plain PyTorch re-implementation of the
Llama / Qwen2 / Qwen3 / Qwen3-MoE decoder, reading a Hugging Face folder (config.json + safetensors) without
the transformers library (only torch 1.13 is available), in float64.

usage: torch_model.py MODEL_DIR TOKENS_JSON OUT_PREFIX [GREEDY_STEPS]
writes OUT_PREFIX.logits (raw little-endian f32, [T, V]) and OUT_PREFIX.json
({"shape": [T, V], "greedy": [ids...]}: greedy continuation of GREEDY_STEPS tokens).

usage: torch_model.py --grads MODEL_DIR BATCH_JSON OUT_SAFETENSORS [ADAPTER_DIR]
BATCH_JSON: {"input_ids": [...], "targets": [...], "samples": [[first, len], ...]} (packed
samples, positions restarting, -100 = no target). Computes the mean cross-entropy over target
tokens and writes the gradient of every weight (full training) or of every LoRA A/B (with an
adapter, named as in adapter_model.safetensors) as f32 safetensors, plus "loss" as a 1-element
tensor. BATCH_JSON may hold "router_aux_loss_coef": the loss becomes CE + coef * aux with
Qwen3-MoE's load-balancing loss (also written, as "aux").

Qwen3-MoE (written from transformers' Qwen3MoeSparseMoeBlock / load_balancing_loss_func): layer i
is sparse iff num_experts > 0, i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0;
p = softmax(router logits), top-k of p, optional renormalisation (norm_topk_prob), and the
selected experts' SwiGLU outputs weighted and summed (a loop over hit experts with index_add_).
Experts may be stored per expert or fused (mlp.experts.gate_up_proj / down_proj).
"""
import json
import math
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def load_safetensors(path):
    out = {}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = bytearray(data[b:e])
        t = torch.frombuffer(buf, dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = t.to(torch.float64)
    return out


def load_weights(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    w = {}
    for f in files:
        w.update(load_safetensors(os.path.join(folder, f)))
    # Fused experts -> per expert: gate_up_proj [E, 2I, H] (gate rows first), down_proj [E, H, I].
    for name in [n for n in w if n.endswith(".mlp.experts.gate_up_proj")]:
        base = name[: -len("gate_up_proj")]
        gu, down = w.pop(name), w.pop(base + "down_proj")
        inter = gu.shape[1] // 2
        for e in range(gu.shape[0]):
            w[f"{base}{e}.gate_proj.weight"] = gu[e, :inter].clone()
            w[f"{base}{e}.up_proj.weight"] = gu[e, inter:].clone()
            w[f"{base}{e}.down_proj.weight"] = down[e].clone()
    return w


def is_sparse_layer(cfg, i):
    experts = cfg.get("num_experts", 0) if cfg["architectures"][0].startswith("Qwen3Moe") else 0
    only = cfg.get("mlp_only_layers") or []
    return experts > 0 and i not in only and (i + 1) % cfg.get("decoder_sparse_step", 1) == 0


def moe_block(cfg, lin, h, router_logits):
    """Qwen3MoeSparseMoeBlock on h [T, H]; appends the raw router logits."""
    E, k = cfg["num_experts"], cfg["num_experts_per_tok"]
    logits = lin("mlp.gate", h)
    router_logits.append(logits)
    probs = torch.softmax(logits, dim=-1)
    weights, chosen = torch.topk(probs, k, dim=-1)
    if cfg.get("norm_topk_prob", False):
        weights = weights / weights.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(h)
    hit = torch.nn.functional.one_hot(chosen, num_classes=E).permute(2, 1, 0)  # [E, k, T]
    for e in range(E):
        slot, tok = torch.where(hit[e])
        if tok.numel() == 0:
            continue
        x = h[tok]
        p = f"mlp.experts.{e}."
        y = lin(p + "down_proj", torch.nn.functional.silu(lin(p + "gate_proj", x)) * lin(p + "up_proj", x))
        out.index_add_(0, tok, y * weights[tok, slot, None])
    return out


def load_balancing_loss(cfg, router_logits):
    """transformers' load_balancing_loss_func without a padding mask: the layers' logits
    concatenated along tokens, E * sum_e (fraction of (token, slot) picks of e) * (mean p_e)."""
    E, k = cfg["num_experts"], cfg["num_experts_per_tok"]
    z = torch.cat(router_logits, dim=0)
    p = torch.softmax(z, dim=-1)
    _, sel = torch.topk(p, k, dim=-1)
    mask = torch.nn.functional.one_hot(sel, E).to(p.dtype)  # [N, k, E]
    tokens_per_expert = mask.mean(dim=0)                      # [k, E]
    prob_per_expert = p.mean(dim=0)                           # [E]
    return E * (tokens_per_expert * prob_per_expert[None, :]).sum()


def inv_freq(cfg, head_dim):
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    sc = cfg.get("rope_scaling") or {}
    kind = sc.get("rope_type", sc.get("type", "default"))
    if kind == "linear":
        inv = inv / sc["factor"]
    elif kind == "llama3":
        factor, low, high = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
        old = sc["original_max_position_embeddings"]
        low_wl, high_wl = old / low, old / high
        wl = 2 * math.pi / inv
        scaled = torch.where(wl > low_wl, inv / factor, inv)
        smooth = (old / wl - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wl < high_wl) * ~(wl > low_wl)
        inv = torch.where(medium, smoothed, scaled)
    return inv.to(torch.float64)


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(cfg, w, ids):
    return forward_packed(cfg, w, ids, [(0, len(ids))])


def lora_delta(lora, name, h):
    """scale * (h A^T) B^T for the LoRA pair of weight `name`, or None."""
    if lora is None:
        return None
    key = "base_model.model." + name[: -len(".weight")]
    a = lora["tensors"].get(key + ".lora_A.weight")
    if a is None:
        return None
    b = lora["tensors"][key + ".lora_B.weight"]
    return lora["scale"] * (h @ a.T) @ b.T


def forward_packed(cfg, w, ids, samples, lora=None, hidden=None, router_logits=None):
    H = cfg["hidden_size"]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]
    qwen3 = cfg["architectures"][0] in ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM")
    if router_logits is None:
        router_logits = []
    T = len(ids)
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    pos = torch.zeros(T, dtype=torch.float64)
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64)
    for first, n in samples:  # causal within each packed sample, positions restarting
        pos[first:first + n] = torch.arange(n, dtype=torch.float64)
        mask[first:first + n, first:first + n] = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)
    freqs = torch.outer(pos, inv_freq(cfg, hd))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"], eps)

        def lin(name, inp):
            y = inp @ w[p + name + ".weight"].T
            b = w.get(p + name + ".bias")
            if b is not None:
                y = y + b
            d = lora_delta(lora, p + name + ".weight", inp)
            return y + d if d is not None else y

        def proj(name):
            return lin(f"self_attn.{name}", h)

        q = proj("q_proj").view(T, nh, hd)
        k = proj("k_proj").view(T, nkv, hd)
        v = proj("v_proj").view(T, nkv, hd)
        if qwen3:
            q = rms(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms(k, w[p + "self_attn.k_norm.weight"], eps)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
        a = torch.einsum("hts,shd->thd", s.softmax(-1), v).reshape(T, nh * hd)
        x = x + lin("self_attn.o_proj", a)
        h = rms(x, w[p + "post_attention_layernorm.weight"], eps)
        if is_sparse_layer(cfg, i):
            x = x + moe_block(cfg, lin, h, router_logits)
            continue
        g = lin("mlp.gate_proj", h)
        u = lin("mlp.up_proj", h)
        x = x + lin("mlp.down_proj", torch.nn.functional.silu(g) * u)
    x = rms(x, w["model.norm.weight"], eps)
    if hidden is not None:
        hidden.append(x)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def objective_loss(obj, logits, hidden, targets, keep, samples, extra=None):
    """The test objectives of tests/train/objective_reference_test.cc and
    tests/rlhf/ppo_model_reference_test.cc, written from their math. `extra` holds parameters an
    objective adds (a value head's score weight)."""
    dt = torch.float64
    logp = torch.log_softmax(logits, -1).gather(1, targets.clamp(min=0)[:, None])[:, 0]
    logp = torch.where(keep, logp, torch.zeros_like(logp))
    kind = obj["type"]
    if kind == "weighted_ce":  # scale * sum_t w_t * (-log p_t)
        wt = torch.tensor(obj["token_weights"], dtype=dt)
        return obj["scale"] * (-(wt * logp)[keep]).sum()
    if kind == "exp_logp":  # sum_t c_t * p_t: a gradient that depends on log p
        c = torch.tensor(obj["coef"], dtype=dt)
        return (c * logp.exp())[keep].sum()
    if kind == "sequence_sigmoid":  # -log sigmoid(beta * (S_0 - S_1)), S_i = sum of sample i's log p
        seq = [logp[f:f + n].sum() for f, n in samples]
        return -torch.nn.functional.logsigmoid(obj["beta"] * (seq[0] - seq[1]))
    if kind == "value_head":  # scale * sum_t 0.5 * (h_t . u)^2 over all rows
        u = torch.tensor(obj["u"], dtype=dt)
        return obj["scale"] * 0.5 * ((hidden @ u) ** 2).sum()
    if kind == "grpo":  # GRPO (loss_type grpo) on logits / temperature, fixed old/ref log-probs
        lt = torch.log_softmax(logits / obj["temperature"], -1)
        x = lt.gather(1, targets.clamp(min=0)[:, None])[:, 0]
        old = torch.tensor(obj["old"], dtype=dt)
        ref = torch.tensor(obj["ref"], dtype=dt)
        ratio = torch.exp(x - old)
        clipped = torch.clamp(ratio, 1 - obj["eps_low"], 1 + obj["eps_high"])
        total = 0
        for (f, n), a in zip(samples, obj["advantages"]):
            k = keep[f:f + n]
            r, c = ratio[f:f + n][k], clipped[f:f + n][k]
            tok = -torch.min(r * a, c * a)
            d = torch.clamp(ref[f:f + n][k] - x[f:f + n][k], -20, 20)
            tok = tok + obj["beta"] * torch.clamp(torch.exp(d) - d - 1, -10, 10)
            total = total + tok.mean()
        return obj["scale"] * total / len(samples)
    if kind == "ppo_policy":  # TRL's clipped policy loss on logits / temperature, a token mean
        lt = torch.log_softmax(logits / obj["temperature"], -1)
        x = lt.gather(1, targets.clamp(min=0)[:, None])[:, 0][keep]
        old = torch.tensor(obj["old"], dtype=dt)[keep]
        adv = torch.tensor(obj["advantages"], dtype=dt)[keep]
        ratio = torch.exp(x - old)
        c = obj["cliprange"]
        pg = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - c, 1 + c))
        return obj["scale"] * pg.mean()
    if kind == "ppo_value":  # TRL's clipped value loss, values = score . h at the value rows
        rows = torch.tensor(obj["rows"])
        v = (hidden[rows] @ extra["score.weight"].T)[:, 0]
        old = torch.tensor(obj["old_values"], dtype=dt)
        ret = torch.tensor(obj["returns"], dtype=dt)
        c = obj["cliprange_value"]
        vc = old + torch.clamp(v - old, -c, c)
        vf = 0.5 * torch.max((v - ret) ** 2, (vc - ret) ** 2).mean()
        return obj["scale"] * obj["vf_coef"] * vf
    raise SystemExit(f"unknown objective {kind}")


def apply_fused_lora(cfg, w, lt, acfg, scale):
    """PEFT's ParamWrapper (target_parameters) on Qwen3-MoE's fused expert parameters, written
    from peft/tuners/lora/layer.py: for a parameter [E, d1, d2], lora_A [r E, d1] and lora_B
    [d2, r E] give delta = einsum("o r e, e r i -> e i o", B viewed [d2, r, E], A viewed
    [E, r, d1]) * scale, added to the parameter. A module's parameters are wrapped in
    registration order (gate_up_proj, then down_proj), the second wrapper around the first, so
    with both targeted gate_up_proj's keys carry ".base_layer". Returns weights with the experts
    replaced by base + delta (per expert, as load_weights splits them)."""
    targets = acfg.get("target_parameters") or []
    if not targets:
        return w
    w = dict(w)
    E = cfg["num_experts"]
    for i in range(cfg["num_hidden_layers"]):
        if not is_sparse_layer(cfg, i):
            continue
        stem = f"model.layers.{i}.mlp.experts"
        def hit(name):
            full = f"{stem}.{name}"
            return any(full == t or full.endswith("." + t) for t in targets)
        gu, dn = hit("gate_up_proj"), hit("down_proj")
        for name, on in (("gate_up_proj", gu), ("down_proj", dn)):
            if not on:
                continue
            key = "base_model.model." + stem + (".base_layer" if name == "gate_up_proj" and dn else "")
            A, B = lt[key + ".lora_A.weight"], lt[key + ".lora_B.weight"]
            d1, d2 = A.shape[1], B.shape[0]
            delta = torch.einsum("ore,eri->eio", B.reshape(d2, -1, E), A.reshape(E, -1, d1)) * scale
            for e in range(E):
                p = f"{stem}.{e}."
                if name == "gate_up_proj":
                    inter = d1 // 2
                    w[p + "gate_proj.weight"] = w[p + "gate_proj.weight"] + delta[e, :inter]
                    w[p + "up_proj.weight"] = w[p + "up_proj.weight"] + delta[e, inter:]
                else:
                    w[p + "down_proj.weight"] = w[p + "down_proj.weight"] + delta[e]
    return w


def load_adapter(adapter, w):
    """The PEFT adapter folder `adapter` as trainable tensors: ({"tensors", "scale"}, its
    adapter_config.json). Its modules_to_save weights replace the base ones in `w`."""
    acfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
    r, alpha = acfg["r"], acfg["lora_alpha"]
    scale = alpha / math.sqrt(r) if acfg.get("use_rslora") else alpha / r
    lt = load_safetensors(os.path.join(adapter, "adapter_model.safetensors"))
    for t in lt.values():
        t.requires_grad_(True)
    for k, t in lt.items():  # modules_to_save: whole weights replacing the base ones
        if ".lora_" not in k:
            w[k[len("base_model.model."):]] = t
    return {"tensors": lt, "scale": scale}, acfg


def grads_main(folder, batch_json, out, adapter=None):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    w = load_weights(folder)
    batch = json.load(open(batch_json))
    lora = None
    if adapter:
        lora, acfg = load_adapter(adapter, w)
        w = apply_fused_lora(cfg, w, lora["tensors"], acfg, lora["scale"])
        params = lora["tensors"]
    else:
        for t in w.values():
            t.requires_grad_(True)
        params = w
    hidden, router_logits = [], []
    logits = forward_packed(cfg, w, batch["input_ids"], batch["samples"], lora, hidden, router_logits)
    targets = torch.tensor(batch["targets"])
    keep = targets != -100
    obj = batch.get("objective")
    extra = {}
    if obj is not None and "score" in obj:  # a value head [1, H] trained with the model
        extra["score.weight"] = torch.tensor([obj["score"]], dtype=torch.float64, requires_grad=True)
        params = dict(params)
        params.update(extra)
    if obj is None:
        loss = torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="mean")
    else:
        loss = objective_loss(obj, logits, hidden[0], targets, keep, batch["samples"], extra)
    aux = load_balancing_loss(cfg, router_logits) if router_logits else torch.zeros((), dtype=torch.float64)
    coef = batch.get("router_aux_loss_coef", 0.0)
    if coef:
        loss = loss + coef * aux
    loss.backward()
    out_t = {name: t.grad if t.grad is not None else torch.zeros_like(t) for name, t in params.items()}
    out_t["loss"] = loss.detach().reshape(1)
    out_t["aux"] = aux.detach().reshape(1)
    save_safetensors(out, out_t)


def main():
    if sys.argv[1] == "--grads":
        grads_main(*sys.argv[2:])
        return
    folder, tokens_json, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    cfg = json.load(open(os.path.join(folder, "config.json")))
    w = load_weights(folder)
    ids = json.load(open(tokens_json))
    logits = forward(cfg, w, ids)
    with open(prefix + ".logits", "wb") as f:
        f.write(logits.to(torch.float32).contiguous().numpy().tobytes())
    seq = list(ids)
    greedy = []
    for _ in range(steps):
        nxt = int(forward(cfg, w, seq)[-1].argmax())
        greedy.append(nxt)
        seq.append(nxt)
    json.dump({"shape": list(logits.shape), "greedy": greedy}, open(prefix + ".json", "w"))


if __name__ == "__main__":
    main()
