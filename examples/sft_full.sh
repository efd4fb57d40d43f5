#!/usr/bin/env bash
# Full-parameter fine-tuning: every weight trained (f32), saved as a Hugging Face folder.
PRESET="${PRESET:-tiny}"
source "$(dirname "$0")/common.sh"
"$SWIFTLET" sft \
  --model "$MODEL" \
  --tuner_type full \
  --dataset 'swiftlet/arithmetic#2000' \
  --learning_rate 2e-3 --max_steps "$(steps 200)" \
  --per_device_train_batch_size 8 --gradient_accumulation_steps 1 \
  --split_dataset_ratio 0.02 --eval_steps 100 --save_steps 100 --save_total_limit 1 --logging_steps 10 \
  --output_dir "$WORK/sft_full" | tee "$WORK/sft_full.txt"
CKPT="$(last_checkpoint "$WORK/sft_full.txt")"
"$SWIFTLET" infer --model "$CKPT" --val_dataset 'swiftlet/arithmetic:test#5' --max_new_tokens 8 \
  --temperature 0 --result_path "$WORK/sft_full_answers.jsonl"
