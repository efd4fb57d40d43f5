#!/usr/bin/env bash
# DPO with LoRA on a preference dataset (ms-swift: swift rlhf --rlhf_type dpo ...): the reference
# is the base model with the adapter switched off, so no second copy is held in memory.
source "$(dirname "$0")/common.sh"
DATA="$WORK/dpo_pairs.jsonl"
# A small preference set: the same questions answered the preferred and the rejected way.
qs=("Who are you?" "What are you?" "Introduce yourself." "What is your name?")
: > "$DATA"
for i in $(seq 0 63); do
  q="${qs[$((i % 4))]}"
  ((i >= 4)) && q="$q ($i)"
  printf '{"messages": [{"role": "user", "content": "%s"}, {"role": "assistant", "content": "I am Swiftlet, a small assistant."}], "rejected_response": "I am ChatGPT."}\n' "$q" >> "$DATA"
done
"$SWIFTLET" rlhf \
  --rlhf_type dpo \
  --model "$MODEL" \
  --tuner_type lora --lora_rank 8 --lora_alpha 32 \
  --dataset "$DATA" --split_dataset_ratio 0.1 \
  --beta 0.1 --rpo_alpha 0.1 \
  --learning_rate 5e-4 --max_steps "$(steps 60)" \
  --per_device_train_batch_size 2 --gradient_accumulation_steps 2 \
  --eval_steps 20 --save_steps 20 --logging_steps 5 \
  --output_dir "$WORK/dpo" | tee "$WORK/dpo.txt"
echo "logged: $(ls "$(dirname "$(last_checkpoint "$WORK/dpo.txt")")"/logging.jsonl)"
