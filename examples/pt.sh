#!/usr/bin/env bash
# Continued pre-training on plain text (loss on every token, no chat template).
source "$(dirname "$0")/common.sh"
TEXT="$WORK/corpus.jsonl"
for i in $(seq 1 64); do
  echo "{\"text\": \"Swiftlets are small birds. Swiftlet number $i builds its nest from saliva and flies fast.\"}"
done > "$TEXT"
"$SWIFTLET" pt \
  --model "$MODEL" \
  --tuner_type lora \
  --dataset "$TEXT" \
  --learning_rate 1e-3 --max_steps "$(steps 50)" \
  --per_device_train_batch_size 4 --gradient_accumulation_steps 1 --packing true --max_length 256 \
  --save_steps 50 --logging_steps 5 --output_dir "$WORK/pt" | tee "$WORK/pt.txt"
