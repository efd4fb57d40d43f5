#!/usr/bin/env bash
# Merge a LoRA checkpoint into its base model, then run inference with the adapter and with the
# merged folder (CKPT=... to pick one; default: train a short LoRA run first).
source "$(dirname "$0")/common.sh"
if [[ -z "${CKPT:-}" ]]; then
  "$(dirname "$0")/sft_lora.sh" > "$WORK/merge_infer_train.txt"
  CKPT="$(last_checkpoint "$WORK/merge_infer_train.txt")"
fi
"$SWIFTLET" export --adapters "$CKPT" --merge_lora true --exist_ok true
Q="$WORK/questions.jsonl"
echo '{"query": "who are you?"}' > "$Q"
echo '{"query": "What is 12 + 30?", "response": "42"}' >> "$Q"
"$SWIFTLET" infer --adapters "$CKPT" --val_dataset "$Q" --max_new_tokens 32 --temperature 0 \
  --result_path "$WORK/answers-adapter.jsonl"
"$SWIFTLET" infer --model "$CKPT-merged" --val_dataset "$Q" --max_new_tokens 32 --temperature 0 \
  --result_path "$WORK/answers-merged.jsonl"
echo "interactive chat: $SWIFTLET infer --adapters $CKPT"
