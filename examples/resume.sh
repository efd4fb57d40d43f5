#!/usr/bin/env bash
# Resume a run from a checkpoint: weights, optimizer, schedule and data position are restored and
# the run continues exactly as if it had not stopped (into a new version folder).
source "$(dirname "$0")/common.sh"
N="$(steps 40)"
COMMON=(--model "$MODEL" --dataset 'swiftlet/self-cognition#200' --model_name 小燕 Swiftlet-Bot
        --model_author 燕子 Swiftlet --max_steps "$((2 * N))" --save_steps "$N" --logging_steps 5
        --per_device_train_batch_size 2 --gradient_accumulation_steps 2 --learning_rate 1e-3
        --output_dir "$WORK/resume")
# First part: stop after the first checkpoint (here by training N steps of a 2N-step schedule).
"$SWIFTLET" sft "${COMMON[@]}" > "$WORK/resume-1.txt" 2>&1 &
PID=$!
RUN=""
for _ in $(seq 1 600); do
  RUN="$(ls -d "$WORK"/resume/v*/checkpoint-"$N" 2>/dev/null | tail -1 || true)"
  [[ -n "$RUN" && -f "$RUN/trainer_state.json" ]] && break
  sleep 0.1
done
kill -9 "$PID" 2>/dev/null || true
wait "$PID" 2>/dev/null || true
echo "stopped the run; resuming from $RUN"
"$SWIFTLET" sft "${COMMON[@]}" --resume_from_checkpoint "$RUN" | tee "$WORK/resume-2.txt"
