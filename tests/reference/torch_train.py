"""A LoRA training run in PyTorch (float64) on the independent model of torch_model.py, step for
step as swiftlet trains: mean cross-entropy over the batch's target tokens, global-norm gradient
clipping, torch.optim.AdamW with the learning rate given for each step.

usage: torch_train.py MODEL_DIR ADAPTER_DIR PLAN_JSON OUT_JSON
ADAPTER_DIR: the initial PEFT adapter (adapter_config.json + adapter_model.safetensors), with
modules_to_save weights trained in full as well.
PLAN_JSON: {"betas": [b1, b2], "eps": e, "weight_decay": wd, "max_grad_norm": c,
            "steps": [{"lr": lr, "input_ids": [...], "targets": [...], "samples": [[first, n], ...]}]}
OUT_JSON: {"loss": [loss of each step before its update], "grad_norm": [...]}
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_model  # noqa: E402


def main():
    folder, adapter, plan_path, out_path = sys.argv[1:5]
    cfg = json.load(open(os.path.join(folder, "config.json")))
    w = torch_model.load_weights(folder)
    lora, acfg = torch_model.load_adapter(adapter, w)
    plan = json.load(open(plan_path))
    params = list(lora["tensors"].values())
    opt = torch.optim.AdamW(params, lr=0.0, betas=tuple(plan["betas"]), eps=plan["eps"],
                            weight_decay=plan["weight_decay"])
    losses, norms = [], []
    for step in plan["steps"]:
        w_step = torch_model.apply_fused_lora(cfg, w, lora["tensors"], acfg, lora["scale"])
        logits = torch_model.forward_packed(cfg, w_step, step["input_ids"], step["samples"], lora)
        targets = torch.tensor(step["targets"])
        keep = targets != -100
        loss = torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="mean")
        opt.zero_grad()
        loss.backward()
        # HF's clipping: coef = max_norm / (norm + 1e-6), applied when below 1.
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, plan["max_grad_norm"])))
        for g in opt.param_groups:
            g["lr"] = step["lr"]
        opt.step()
        losses.append(float(loss))
    json.dump({"loss": losses, "grad_norm": norms}, open(out_path, "w"))


if __name__ == "__main__":
    main()
