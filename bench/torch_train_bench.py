"""PyTorch eager reference for bench/train_bench.cc: the same Qwen3 math (RMSNorm, q/k norm, RoPE,
GQA attention, SwiGLU, tied LM head, mean cross-entropy), the same LoRA (rank 8, alpha 32,
all-linear, bf16 frozen base, f32 adapters) or full f32 training, per-layer activation
checkpointing, forward + backward timed over the same token ids.
dpo: the LoRA model on one pair (chosen and rejected as a batch of two, prompt TOKENS/4 and replies
TOKENS/4 each): the reference's log-probs without gradient and with the adapters off, then the
policy's forward and backward of the sigmoid DPO loss (beta 0.1) on the replies' summed log-probs.

usage: /usr/bin/python3 bench/torch_train_bench.py lora|full|dpo MODEL_DIR [TOKENS] [STEPS] [THREADS]
"""
import json
import math
import os
import resource
import struct
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

DT = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def load(folder, dtype):
    w = {}
    with open(os.path.join(folder, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=DT[info["dtype"]]).reshape(info["shape"])
        w[name] = t.to(dtype)
    return w


def main():
    mode, folder = sys.argv[1], sys.argv[2]
    T = int(sys.argv[3]) if len(sys.argv) > 3 else (512 if mode == "full" else 1024)
    dpo = mode == "dpo"
    total = T
    if dpo:
        P = R = T // 4
        T = P + R  # each sequence
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 2)
    cfg = json.load(open(os.path.join(folder, "config.json")))
    lora = mode != "full"
    w = load(folder, torch.bfloat16 if lora else torch.float32)
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, L = cfg["head_dim"], cfg["rms_norm_eps"], cfg["num_hidden_layers"]
    params = []
    adapters = {}
    if lora:
        for name, t in w.items():
            if name.endswith("_proj.weight"):
                out, inp = t.shape
                a = (torch.rand(8, inp) * 2 - 1) / math.sqrt(inp)
                b = torch.zeros(out, 8)
                a.requires_grad_(True)
                b.requires_grad_(True)
                adapters[name] = (a, b)
                params += [a, b]
    else:
        for t in w.values():
            t.requires_grad_(True)
            params.append(t)

    adapters_on = [True]

    def lin(name, x):
        y = x @ w[name].T if not lora else (x.to(torch.bfloat16) @ w[name].T).float()
        if name in adapters and adapters_on[0]:
            a, b = adapters[name]
            y = y + 4.0 * (x @ a.T) @ b.T
        return y

    def rms(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g.float()

    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.outer(torch.arange(T).float(), inv)
    cos, sin = torch.cat((ang, ang), -1).cos()[:, None], torch.cat((ang, ang), -1).sin()[:, None]

    def rope(x):
        h = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., h:], x[..., :h]), -1) * sin

    def layer(x, i):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        lead = x.shape[:-1]  # [T] or [B, T]
        q = rms(lin(p + "self_attn.q_proj.weight", h).view(*lead, nh, hd), w[p + "self_attn.q_norm.weight"])
        k = rms(lin(p + "self_attn.k_proj.weight", h).view(*lead, nkv, hd), w[p + "self_attn.k_norm.weight"])
        v = lin(p + "self_attn.v_proj.weight", h).view(*lead, nkv, hd)
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(nh // nkv, -2)
        v = v.repeat_interleave(nh // nkv, -2)
        mask = torch.full((T, T), float("-inf")).triu(1)
        s = torch.einsum("...thd,...shd->...hts", q, k) / math.sqrt(hd) + mask
        a = torch.einsum("...hts,...shd->...thd", s.softmax(-1), v).reshape(*lead, nh * hd)
        x = x + lin(p + "self_attn.o_proj.weight", a)
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        return x + lin(p + "mlp.down_proj.weight",
                       F.silu(lin(p + "mlp.gate_proj.weight", h)) * lin(p + "mlp.up_proj.weight", h))

    ids = torch.tensor([(i * 7919 + 13) % 150000 for i in range(T)])
    emb = w["model.embed_tokens.weight"]

    def step():
        x = emb[ids].float()
        for i in range(L):
            x = checkpoint(layer, x, i, use_reentrant=False)
        x = rms(x, w["model.norm.weight"])
        logits = x @ emb.T if not lora else (x.to(torch.bfloat16) @ emb.T).float()
        loss = F.cross_entropy(logits[:-1], ids[1:])
        loss.backward()
        for p in params:
            p.grad = None
        return float(loss)

    def logps(ids2, grad):
        x = emb[ids2].float()
        for i in range(L):
            x = checkpoint(layer, x, i, use_reentrant=False) if grad else layer(x, i)
        x = rms(x, w["model.norm.weight"])
        logits = (x.to(torch.bfloat16) @ emb.T).float()
        lp = torch.log_softmax(logits[:, P - 1:-1], -1).gather(-1, ids2[:, P:, None])[..., 0]
        return lp.sum(-1)  # [2]: chosen, rejected

    pair = torch.tensor([[((i if i < P else i + side * R) * 7919 + 13) % 150000 for i in range(T)]
                         for side in range(2)])

    def dpo_step():
        with torch.no_grad():
            adapters_on[0] = False
            ref = logps(pair, False)
            adapters_on[0] = True
        pol = logps(pair, True)
        z = 0.1 * ((pol[0] - ref[0]) - (pol[1] - ref[1]))
        loss = -F.logsigmoid(z)
        loss.backward()
        for p in params:
            p.grad = None
        return float(loss)

    if dpo:
        step = dpo_step
    step()
    t = time.time()
    for _ in range(steps):
        loss = step()
    sec = time.time() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dpo:
        print(f"pytorch {torch.__version__} dpo: LoRA r8, 1 pair (prompt {P} + replies {R}) = {total} tokens x "
              f"{steps} steps (reference + policy): {total * steps / sec:.1f} tokens/s, {sec / steps:.2f} s/step, "
              f"peak RSS {rss:.0f} MiB (loss {loss:.4f})")
        return
    print(f"pytorch {torch.__version__} {mode}: {T} tokens x {steps} steps: {T * steps / sec:.1f} tokens/s, "
          f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
