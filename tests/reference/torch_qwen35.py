"""Independent reference for swiftlet's Qwen3.5 (dense and MoE) and Qwen3-Next forward: a plain
PyTorch transcription of transformers' torch fallback path (Qwen3_5GatedDeltaNet with
torch_chunk_gated_delta_rule, Qwen3_5Attention with the output gate and partial rotary, the
zero-centred (1 + w) RMSNorms; the sparse MoE block with its shared expert; Qwen3-Next's
fix_query_key_value_ordering of the fused in_proj_qkvz / in_proj_ba), reading a Hugging Face
folder without the transformers library, in float64. The delta rule runs in the chunked (WY) form
with chunks of 64, as HF prefill does, so it checks swiftlet's recurrent kernel with a different
algorithm.

usage: torch_qwen35.py MODEL_DIR TOKENS_JSON OUT_PREFIX [GREEDY_STEPS]
writes OUT_PREFIX.logits (raw little-endian f32, [T, V]) and OUT_PREFIX.json
({"shape": [T, V], "greedy": [ids...]}: greedy continuation, each step a full forward).

usage: torch_qwen35.py --grads MODEL_DIR BATCH_JSON OUT_SAFETENSORS [ADAPTER_DIR]
BATCH_JSON as torch_model.py --grads (packed samples, -100 = no target): each packed sample runs
on its own (positions, conv and delta-rule state starting from zero), the mean cross-entropy over
target tokens is differentiated by autograd, and the gradient of every weight (or, with a PEFT
adapter, of every lora_A / lora_B) is written with "loss". Here the delta rule runs in its
recurrent form (torch_recurrent_gated_delta_rule's order), so the gradients are autograd's through
the recurrence, independent of the chunked WY algorithm and its hand-written backward.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_model import load_adapter, load_weights, save_safetensors  # noqa: E402


def text_config(cfg):
    if "text_config" in cfg:  # Qwen3_5(Moe)ForConditionalGeneration
        t = dict(cfg["text_config"])
        for k in ("tie_word_embeddings",):
            if k not in t and k in cfg:
                t[k] = cfg[k]
        return t, "model.language_model."
    return cfg, "model."


def rms1p(x, w, eps):  # Qwen3_5RMSNorm: x * rsqrt(mean(x^2) + eps) * (1 + w)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + w)


def l2norm(x, eps=1e-6):
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def chunk_gated_delta_rule(q, k, v, g, beta, chunk=64):
    """torch_chunk_gated_delta_rule with l2norm in the kernel; q, k, v [T, Hv, d]; g, beta [T, Hv]."""
    q, k = l2norm(q), l2norm(k)
    q, k, v, beta, g = [x.transpose(0, 1).contiguous() for x in (q, k, v, beta, g)]  # heads first
    H, T, dk = k.shape
    dv = v.shape[-1]
    pad = (chunk - T % chunk) % chunk
    q, k, v = [F.pad(x, (0, 0, 0, pad)) for x in (q, k, v)]
    beta, g = F.pad(beta, (0, pad)), F.pad(g, (0, pad))
    n = (T + pad) // chunk
    q = q * dk ** -0.5
    v_beta, k_beta = v * beta[..., None], k * beta[..., None]
    q, k, v, k_beta, v_beta = [x.reshape(H, n, chunk, x.shape[-1]) for x in (q, k, v, k_beta, v_beta)]
    g = g.reshape(H, n, chunk).cumsum(-1)
    incl = torch.triu(torch.ones(chunk, chunk, dtype=torch.bool), diagonal=0)
    decay = (g[..., :, None] - g[..., None, :]).tril().exp().tril()
    attn = -((k_beta @ k.transpose(-1, -2)) * decay).masked_fill(incl, 0)
    for i in range(1, chunk):  # forward substitution: attn <- (I + A)^-1 - I
        row = attn[..., i, :i].clone()
        sub = attn[..., :i, :i].clone()
        attn[..., i, :i] = row + (row[..., None] * sub).sum(-2)
    attn = attn + torch.eye(chunk, dtype=attn.dtype)
    u = attn @ v_beta
    w = attn @ (k_beta * g.exp()[..., None])
    S = torch.zeros(H, dk, dv, dtype=q.dtype)
    out = torch.zeros_like(u)
    strict = torch.triu(torch.ones(chunk, chunk, dtype=torch.bool), diagonal=1)
    for i in range(n):
        qi, ki = q[:, i], k[:, i]
        a = (qi @ ki.transpose(-1, -2) * decay[:, i]).masked_fill(strict, 0)
        v_new = u[:, i] - w[:, i] @ S
        out[:, i] = (qi * g[:, i, :, None].exp()) @ S + a @ v_new
        S = S * g[:, i, -1, None, None].exp() + (ki * (g[:, i, -1, None] - g[:, i]).exp()[..., None]).transpose(-1, -2) @ v_new
    return out.reshape(H, -1, dv)[:, :T].transpose(0, 1)  # [T, Hv, dv]


def recurrent_gated_delta_rule(q, k, v, g, beta):
    """torch_recurrent_gated_delta_rule: q, k, v [T, Hv, d] (before l2norm); g, beta [T, Hv]."""
    q, k = l2norm(q) * q.shape[-1] ** -0.5, l2norm(k)
    T, H, dk = k.shape
    S = torch.zeros(H, dk, v.shape[-1], dtype=q.dtype)
    out = []
    for t in range(T):
        S = S * g[t].exp()[:, None, None]  # decay first
        kv = (S * k[t][:, :, None]).sum(-2)  # S^T k of the decayed state
        delta = (v[t] - kv) * beta[t][:, None]
        S = S + k[t][:, :, None] * delta[:, None, :]
        out.append((S * q[t][:, :, None]).sum(-2))
    return torch.stack(out)  # [T, Hv, dv]


def plain(w):
    """Linear layers without adapters: lin(name, x) = x W^T."""
    return lambda name, x: x @ w[name + ".weight"].T


def gated_delta_net(c, w, p, h, lin=None, recurrent=False):
    lin = lin or plain(w)
    T = h.shape[0]
    HK, HV = c["linear_num_key_heads"], c["linear_num_value_heads"]
    dk, dv = c["linear_key_head_dim"], c["linear_value_head_dim"]
    K = c.get("linear_conv_kernel_dim", 4)
    if p + "in_proj_qkvz.weight" in w:  # Qwen3-Next: Qwen3NextGatedDeltaNet.fix_query_key_value_ordering
        r = HV // HK
        qkvz = lin(p + "in_proj_qkvz", h).reshape(T, HK, 2 * dk + 2 * r * dv)
        ba = lin(p + "in_proj_ba", h).reshape(T, HK, 2 * r)
        q, k, v, z = torch.split(qkvz, [dk, dk, r * dv, r * dv], dim=2)
        b, a = torch.split(ba, [r, r], dim=2)
        x = torch.cat((q.reshape(T, -1), k.reshape(T, -1), v.reshape(T, -1)), dim=-1)
        z, b, a = z.reshape(T, HV, dv), b.reshape(T, HV), a.reshape(T, HV)
    else:
        x = lin(p + "in_proj_qkv", h)  # [T, C]
        z = lin(p + "in_proj_z", h).reshape(T, HV, dv)
        b = lin(p + "in_proj_b", h)
        a = lin(p + "in_proj_a", h)
    C = x.shape[1]
    y = F.conv1d(x.T[None], w[p + "conv1d.weight"], groups=C, padding=K - 1)[0, :, :T]
    y = F.silu(y).T
    q, k, v = torch.split(y, [HK * dk, HK * dk, HV * dv], dim=-1)
    q, k, v = q.reshape(T, HK, dk), k.reshape(T, HK, dk), v.reshape(T, HV, dv)
    beta = b.sigmoid()
    g = -w[p + "A_log"].exp() * F.softplus(a + w[p + "dt_bias"])
    r = HV // HK
    q, k = q.repeat_interleave(r, dim=1), k.repeat_interleave(r, dim=1)
    o = (recurrent_gated_delta_rule if recurrent else chunk_gated_delta_rule)(q, k, v, g, beta)
    eps = c.get("rms_norm_eps", 1e-6)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + eps)  # Qwen3_5RMSNormGated
    o = w[p + "norm.weight"] * o * F.silu(z)
    return lin(p + "out_proj", o.reshape(T, HV * dv))


def gated_attention(c, w, p, h, lin=None):
    lin = lin or plain(w)
    T = h.shape[0]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    D = c.get("head_dim", 256)
    eps = c.get("rms_norm_eps", 1e-6)
    qg = lin(p + "q_proj", h).reshape(T, nh, 2 * D)
    q, gate = qg[..., :D], qg[..., D:].reshape(T, nh * D)
    q = rms1p(q, w[p + "q_norm.weight"], eps)
    k = rms1p(lin(p + "k_proj", h).reshape(T, nkv, D), w[p + "k_norm.weight"], eps)
    v = lin(p + "v_proj", h).reshape(T, nkv, D)
    rp = c.get("rope_parameters") or {}
    factor = c.get("partial_rotary_factor", rp.get("partial_rotary_factor", 0.25))
    theta = c.get("rope_theta", rp.get("rope_theta", 10000.0))
    rot = int(D * factor)
    inv = 1.0 / (theta ** (torch.arange(0, rot, 2, dtype=torch.int64).float() / rot))  # f32, as HF
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = emb.cos().to(q.dtype)[:, None, :], emb.sin().to(q.dtype)[:, None, :]

    def rope(x):
        xr, xp = x[..., :rot], x[..., rot:]
        return torch.cat((xr * cos + rotate_half(xr) * sin, xp), dim=-1)

    q, k = rope(q), rope(k)
    rep = nh // nkv
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    s = torch.einsum("thd,shd->hts", q, k) * D ** -0.5
    s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1), float("-inf"))
    o = torch.einsum("hts,shd->thd", s.softmax(-1), v).reshape(T, nh * D)
    o = o * gate.sigmoid()
    return lin(p + "o_proj", o)


def swiglu(lin, p, h):
    return lin(p + "down_proj", F.silu(lin(p + "gate_proj", h)) * lin(p + "up_proj", h))


def is_moe_layer(c, i):
    if c.get("num_experts", 0) <= 0:
        return False
    if c["model_type"] in ("qwen3_5_moe_text", "qwen3_5_moe"):  # Qwen3_5MoeDecoderLayer: always
        return True
    return i not in (c.get("mlp_only_layers") or []) and (i + 1) % c.get("decoder_sparse_step", 1) == 0


def sparse_moe(c, w, p, h, lin):
    """Qwen3_5MoeSparseMoeBlock / Qwen3NextSparseMoeBlock; experts per expert or fused."""
    E, k = c["num_experts"], c["num_experts_per_tok"]
    probs = lin(p + "gate", h).softmax(-1)
    top_w, top_i = probs.topk(k, dim=-1)
    if c["model_type"] != "qwen3_next" or c.get("norm_topk_prob", True):
        top_w = top_w / top_w.sum(-1, keepdim=True)
    fused = p + "experts.gate_up_proj" in w
    out = torch.zeros_like(h)
    for e in range(E):
        rows, slot = (top_i == e).nonzero(as_tuple=True)
        if rows.numel() == 0:
            continue
        x = h[rows]
        if fused:
            gate, up = (x @ w[p + "experts.gate_up_proj"][e].T).chunk(2, dim=-1)
            y = (F.silu(gate) * up) @ w[p + "experts.down_proj"][e].T
        else:
            y = swiglu(lin, f"{p}experts.{e}.", x)
        out = out.index_add(0, rows, y * top_w[rows, slot, None])
    if p + "shared_expert_gate.weight" in w:
        out = out + lin(p + "shared_expert_gate", h).sigmoid() * swiglu(lin, p + "shared_expert.", h)
    return out


def forward(cfg, w, ids, lin=None, recurrent=False):
    lin = lin or plain(w)
    c, P = text_config(cfg)
    eps = c.get("rms_norm_eps", 1e-6)
    n = c["num_hidden_layers"]
    types = c.get("layer_types") or [
        "full_attention" if (i + 1) % c.get("full_attention_interval", 4) == 0 else "linear_attention"
        for i in range(n)]
    x = w[P + "embed_tokens.weight"][torch.tensor(ids)]
    for i in range(n):
        p = f"{P}layers.{i}."
        h = rms1p(x, w[p + "input_layernorm.weight"], eps)
        if types[i] == "linear_attention":
            x = x + gated_delta_net(c, w, p + "linear_attn.", h, lin, recurrent)
        else:
            x = x + gated_attention(c, w, p + "self_attn.", h, lin)
        h = rms1p(x, w[p + "post_attention_layernorm.weight"], eps)
        x = x + (sparse_moe(c, w, p + "mlp.", h, lin) if is_moe_layer(c, i) else swiglu(lin, p + "mlp.", h))
    x = rms1p(x, w[P + "norm.weight"], eps)
    head = w[P + "embed_tokens.weight"] if c.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return x @ head.T


def grads_main(folder, batch_json, out, adapter=None):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    w = load_weights(folder)
    batch = json.load(open(batch_json))
    if adapter:
        lora, _ = load_adapter(adapter, w)
        params = lora["tensors"]

        def lin(name, x):  # x W^T + scale (x A^T) B^T, PEFT's LoRA
            y = x @ w[name + ".weight"].T
            a = params.get("base_model.model." + name + ".lora_A.weight")
            if a is None:
                return y
            b = params["base_model.model." + name + ".lora_B.weight"]
            return y + lora["scale"] * (x @ a.T) @ b.T
    else:
        for t in w.values():
            t.requires_grad_(True)
        params, lin = w, None
    ids = batch["input_ids"]
    logits = torch.cat([forward(cfg, w, ids[f:f + n], lin, recurrent=True) for f, n in batch["samples"]])
    targets = torch.tensor(batch["targets"])
    keep = targets != -100
    loss = F.cross_entropy(logits[keep], targets[keep], reduction="mean")
    loss.backward()
    grads = {n: t.grad if t.grad is not None else torch.zeros_like(t) for n, t in params.items()}
    grads["loss"] = loss.detach().reshape(1)
    save_safetensors(out, grads)


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
    seq, greedy = list(ids), []
    for _ in range(steps):
        nxt = int(forward(cfg, w, seq)[-1].argmax())
        greedy.append(nxt)
        seq.append(nxt)
    json.dump({"shape": list(logits.shape), "greedy": greedy}, open(prefix + ".json", "w"))


if __name__ == "__main__":
    main()
