"""PyTorch eager comparison row for bench/qwen35_bench.cc: full fine-tuning forward + backward of
the same Qwen3.5 folder on the same token ids, f32, through the independent reference of
tests/reference/torch_qwen35.py with the delta rule in its recurrent form (a loop over tokens,
differentiated by autograd), without activation checkpointing; then its prefill (no gradient).

usage: /usr/bin/python3 bench/torch_qwen35_bench.py MODEL_DIR [TOKENS] [STEPS] [THREADS]
"""
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
from torch_model import load_weights  # noqa: E402
from torch_qwen35 import forward  # noqa: E402


def main():
    folder = sys.argv[1]
    tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else os.cpu_count())
    cfg = json.load(open(os.path.join(folder, "config.json")))
    w = {k: v.to(torch.float32).requires_grad_(True) for k, v in load_weights(folder).items()}
    ids = [(i * 7919 + 13) % 150000 for i in range(tokens)]
    targets = torch.tensor(ids[1:])

    def step():
        for t in w.values():
            t.grad = None
        logits = forward(cfg, w, ids, recurrent=True)
        loss = F.cross_entropy(logits[:-1], targets)
        loss.backward()
        return float(loss)

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sec = time.perf_counter() - t
    print(f"pytorch {torch.__version__} eager (recurrent rule) full training: {tokens} tokens x "
          f"{steps} steps: {tokens * steps / sec:.1f} tokens/s (loss {loss:.4f})")
    with torch.no_grad():
        t = time.perf_counter()
        forward(cfg, w, ids, recurrent=True)
        sec = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pytorch eager (recurrent rule) prefill {tokens}: {tokens / sec:.1f} tokens/s; "
          f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
