#!/usr/bin/env bash
# GRPO with LoRA (ms-swift: swift rlhf --rlhf_type grpo ...): the built-in arithmetic questions as
# prompts, their answers as the `solution` column, the `accuracy` reward plus an external reward
# command (any program reading completions as JSON on stdin, printing one score per completion).
# Rollouts run on swiftlet's own engine over the adapter being trained.
source "$(dirname "$0")/common.sh"
SCORER="$WORK/short_answer.py"
# An external reward: 1 for an answer of at most 8 characters, else 0 (see README: external rewards).
cat > "$SCORER" <<'PY'
import json, sys
d = json.load(sys.stdin)
print(json.dumps([1.0 if len(c.strip()) <= 8 else 0.0 for c in d["completions"]]))
PY
"$SWIFTLET" rlhf \
  --rlhf_type grpo \
  --model "$MODEL" \
  --tuner_type lora --lora_rank 8 --lora_alpha 32 \
  --dataset 'swiftlet/arithmetic#256' --columns '{"response": "solution"}' \
  --reward_funcs accuracy --external_reward_command "python3 $SCORER" --reward_weights 1 0.2 \
  --num_generations 4 --per_device_train_batch_size 8 --max_completion_length 16 \
  --temperature 0.9 --beta 0.04 \
  --learning_rate 1e-4 --max_steps "$(steps 20)" \
  --save_steps 10 --logging_steps 1 --log_completions true \
  --output_dir "$WORK/grpo" | tee "$WORK/grpo.txt"
RUN="$(dirname "$(last_checkpoint "$WORK/grpo.txt")")"
echo "completions: $(wc -l < "$RUN/completions.jsonl") in $RUN/completions.jsonl"
