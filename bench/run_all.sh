#!/usr/bin/env bash
# Every benchmark, one after another (speed is measured here, never in tests). Figures go to
# stdout; models are created under $TMPDIR on first use. The machine should be otherwise idle.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="${SWIFTLET_BUILD_DIR:-$ROOT/build}"
TMP="${TMPDIR:-/tmp}"
echo "## machine"; "$B/swiftlet" env | sed -n '1,12p'
echo "## GEMM and memory"; [[ -x "$B/gemm_bench" ]] && "$B/gemm_bench"
echo "## tokenizer"; "$B/tokenizer_bench"
echo "## generation (Qwen3-0.6B shape)"; "$B/model_bench"
echo "## training"
"$B/train_bench" lora
/usr/bin/python3 "$ROOT/bench/torch_train_bench.py" lora "$TMP/swiftlet-bench-qwen3-0.6b" || echo "(PyTorch row needs Debian's python3-torch)"
"$B/train_bench" full
/usr/bin/python3 "$ROOT/bench/torch_train_bench.py" full "$TMP/swiftlet-bench-small" || true
if [[ -x "$ROOT/bench/serve_bench.sh" ]]; then echo "## serving"; "$ROOT/bench/serve_bench.sh"; fi
if [[ -x "$B/serve_bench" ]]; then echo "## serving"; "$B/serve_bench"; fi
