#!/usr/bin/python3
"""Independent PyTorch reference for Qwen3.5's gated delta rule, transcribed from transformers'
torch_chunk_gated_delta_rule (chunk 64, zero padding, forward substitution on the chunk's strictly
lower matrix), in float64.

  torch_gated_delta.py delta IN OUT
IN: a JSON header line {"T","HK","HV","dk","dv"} followed by float32 q [T,HK,dk], k [T,HK,dk],
v [T,HV,dv], g [T,HV], beta [T,HV], state [HV,dk,dv]. q, k as the kernel takes them (l2-normalised,
q scaled). OUT: float32 o [T,HV,dv] then the final state [HV,dk,dv].
"""
import json
import sys

import torch
import torch.nn.functional as F


def chunk_gated_delta_rule(query, key, value, g, beta, initial_state, chunk_size=64):
    # [B, T, H, D] -> [B, H, T, D], as transformers
    query, key, value, beta, g = [x.transpose(1, 2).contiguous() for x in (query, key, value, beta, g)]
    B, H, T, dk = key.shape
    dv = value.shape[-1]
    pad = (chunk_size - T % chunk_size) % chunk_size
    query = F.pad(query, (0, 0, 0, pad))
    key = F.pad(key, (0, 0, 0, pad))
    value = F.pad(value, (0, 0, 0, pad))
    beta = F.pad(beta, (0, pad))
    g = F.pad(g, (0, pad))
    total = T + pad
    v_beta = value * beta.unsqueeze(-1)
    k_beta = key * beta.unsqueeze(-1)
    query, key, value, k_beta, v_beta = [
        x.reshape(B, H, -1, chunk_size, x.shape[-1]) for x in (query, key, value, k_beta, v_beta)]
    g = g.reshape(B, H, -1, chunk_size)
    mask = torch.triu(torch.ones(chunk_size, chunk_size, dtype=torch.bool), diagonal=0)
    g = g.cumsum(dim=-1)
    decay_mask = ((g.unsqueeze(-1) - g.unsqueeze(-2)).tril().exp()).tril()
    attn = -((k_beta @ key.transpose(-1, -2)) * decay_mask).masked_fill(mask, 0)
    for i in range(1, chunk_size):
        row = attn[..., i, :i].clone()
        sub = attn[..., :i, :i].clone()
        attn[..., i, :i] = row + (row.unsqueeze(-1) * sub).sum(-2)
    attn = attn + torch.eye(chunk_size, dtype=attn.dtype)
    value = attn @ v_beta
    k_cumdecay = attn @ (k_beta * g.exp().unsqueeze(-1))
    state = initial_state.clone()
    out = torch.zeros_like(value)
    mask = torch.triu(torch.ones(chunk_size, chunk_size, dtype=torch.bool), diagonal=1)
    for i in range(total // chunk_size):
        q_i, k_i, v_i = query[:, :, i], key[:, :, i], value[:, :, i]
        a = (q_i @ k_i.transpose(-1, -2) * decay_mask[:, :, i]).masked_fill_(mask, 0)
        v_new = v_i - k_cumdecay[:, :, i] @ state
        inter = (q_i * g[:, :, i, :, None].exp()) @ state
        out[:, :, i] = inter + a @ v_new
        state = (state * g[:, :, i, -1, None, None].exp()
                 + (k_i * (g[:, :, i, -1, None] - g[:, :, i]).exp()[..., None]).transpose(-1, -2) @ v_new)
    out = out.reshape(B, H, -1, dv)[:, :, :T].transpose(1, 2)
    return out, state


def delta_main(inp, outp):
    with open(inp, "rb") as f:
        d = json.loads(f.readline())
        raw = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).double()
    T, HK, HV, dk, dv = d["T"], d["HK"], d["HV"], d["dk"], d["dv"]
    sizes = [T * HK * dk, T * HK * dk, T * HV * dv, T * HV, T * HV, HV * dk * dv]
    q, k, v, g, beta, s0 = torch.split(raw, sizes)
    r = HV // HK
    q = q.reshape(1, T, HK, dk).repeat_interleave(r, dim=2)  # value head j uses key head j // r
    k = k.reshape(1, T, HK, dk).repeat_interleave(r, dim=2)
    o, s = chunk_gated_delta_rule(q, k, v.reshape(1, T, HV, dv), g.reshape(1, T, HV),
                                  beta.reshape(1, T, HV), s0.reshape(1, HV, dk, dv))
    with open(outp, "wb") as f:
        f.write(o.reshape(-1).float().numpy().tobytes())
        f.write(s.reshape(-1).float().numpy().tobytes())


if __name__ == "__main__":
    if sys.argv[1] == "delta":
        delta_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: torch_qwen35.py delta IN OUT")
