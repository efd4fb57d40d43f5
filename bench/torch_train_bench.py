"""PyTorch eager reference for bench/train_bench.cc: the same Qwen3 math (RMSNorm, q/k norm, RoPE,
GQA attention, SwiGLU, tied LM head, mean cross-entropy), the same LoRA (rank 8, alpha 32,
all-linear, bf16 frozen base, f32 adapters) or full f32 training, per-layer activation
checkpointing, forward + backward timed over the same token ids.

usage: /usr/bin/python3 bench/torch_train_bench.py lora|full MODEL_DIR [TOKENS] [STEPS] [THREADS]
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
    T = int(sys.argv[3]) if len(sys.argv) > 3 else (1024 if mode == "lora" else 512)
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 2)
    cfg = json.load(open(os.path.join(folder, "config.json")))
    lora = mode == "lora"
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

    def lin(name, x):
        y = x @ w[name].T if not lora else (x.to(torch.bfloat16) @ w[name].T).float()
        if name in adapters:
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
        q = rms(lin(p + "self_attn.q_proj.weight", h).view(T, nh, hd), w[p + "self_attn.q_norm.weight"])
        k = rms(lin(p + "self_attn.k_proj.weight", h).view(T, nkv, hd), w[p + "self_attn.k_norm.weight"])
        v = lin(p + "self_attn.v_proj.weight", h).view(T, nkv, hd)
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(nh // nkv, 1)
        v = v.repeat_interleave(nh // nkv, 1)
        mask = torch.full((T, T), float("-inf")).triu(1)
        s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
        a = torch.einsum("hts,shd->thd", s.softmax(-1), v).reshape(T, nh * hd)
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

    step()
    t = time.time()
    for _ in range(steps):
        step()
    sec = time.time() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pytorch {torch.__version__} {mode}: {T} tokens x {steps} steps: {T * steps / sec:.1f} tokens/s, "
          f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
