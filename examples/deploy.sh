#!/usr/bin/env bash
# Serve a model with the OpenAI API and query it with curl (streaming and not).
source "$(dirname "$0")/common.sh"
PORT="${PORT:-$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')}"
"$SWIFTLET" deploy --model "$MODEL" --host 127.0.0.1 --port "$PORT" --served_model_name demo \
  --max_new_tokens 32 > "$WORK/deploy.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PORT/v1/models"; echo
curl -sf "http://127.0.0.1:$PORT/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model": "demo", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16, "temperature": 0}'; echo
curl -sfN "http://127.0.0.1:$PORT/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model": "demo", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8, "stream": true}'
kill -INT $SERVER
wait $SERVER
trap - EXIT
