#!/usr/bin/env bash
# Single-device LoRA fine-tuning (ms-swift: swift sft --tuner_type lora ...).
source "$(dirname "$0")/common.sh"
"$SWIFTLET" sft \
  --model "$MODEL" \
  --tuner_type lora \
  --dataset 'swiftlet/self-cognition#500' 'swiftlet/arithmetic#500' \
  --model_name 小燕 Swiftlet-Bot --model_author 燕子 Swiftlet \
  --lora_rank 8 --lora_alpha 32 --target_modules all-linear \
  --learning_rate 1e-3 --num_train_epochs 1 --max_steps "$(steps 200)" \
  --per_device_train_batch_size 2 --gradient_accumulation_steps 4 \
  --split_dataset_ratio 0.02 --eval_steps 50 --save_steps 50 --save_total_limit 2 --logging_steps 5 \
  --max_length 512 --output_dir "$WORK/sft_lora" | tee "$WORK/sft_lora.txt"
