#!/usr/bin/env bash
# A reward model with LoRA (ms-swift: swift rlhf --rlhf_type rm ...): a score head on the last
# token (Qwen3ForSequenceClassification), trained on chosen/rejected pairs with optional margins,
# then merged into a plain Hugging Face sequence-classification folder.
source "$(dirname "$0")/common.sh"
DATA="$WORK/rm_pairs.jsonl"
: > "$DATA"
for i in $(seq 0 63); do
  a=$((i % 7 + 2))
  b=$((i % 5 + 3))
  printf '{"messages": [{"role": "user", "content": "What is %d + %d?"}, {"role": "assistant", "content": "%d"}], "rejected_response": "%d", "margin": 1.0}\n' "$a" "$b" $((a + b)) $((a + b + 1)) >> "$DATA"
done
"$SWIFTLET" rlhf \
  --rlhf_type rm \
  --model "$MODEL" \
  --tuner_type lora --lora_rank 8 \
  --dataset "$DATA" --split_dataset_ratio 0.1 \
  --center_rewards_coefficient 0.01 \
  --learning_rate 5e-4 --max_steps "$(steps 60)" \
  --per_device_train_batch_size 2 --gradient_accumulation_steps 2 \
  --eval_steps 20 --save_steps 20 --logging_steps 5 \
  --output_dir "$WORK/rm" | tee "$WORK/rm.txt"
CKPT="$(last_checkpoint "$WORK/rm.txt")"
"$SWIFTLET" export --adapters "$CKPT" --merge_lora true
echo "reward model: ${CKPT}-merged"
