#!/usr/bin/env bash
# GPU smoke test of `type: VLLM`: start a vLLM example config, then check /v1/infer with curl,
# non-streaming and streaming. Needs a CUDA GPU and `pip install '.[vllm]'` (vLLM's CUDA build).
#
#   scripts/gpu_smoke.sh [config.yaml] [model_id]
#   defaults: examples/gpu_vllm_config.yaml falcon3-1b-instruct; READY_TIMEOUT_S=900
#   Serve listens on its default port 8000 (set http_options in the YAML to change it, then BASE_URL).
set -euo pipefail

CONFIG="${1:-examples/gpu_vllm_config.yaml}"
MODEL_ID="${2:-falcon3-1b-instruct}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-900}"
BASE="${BASE_URL:-http://127.0.0.1:8000}"
LOG="${LOG:-gpu_smoke.log}"
cd "$(dirname "$0")/.."

python -c "import vllm, torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.get_device_name(0))"

# serve run starts its own local Ray cluster and tears it down on SIGTERM (never `ray stop`).
serve run "$CONFIG" > "$LOG" 2>&1 &
SERVE_PID=$!
trap 'kill -TERM "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true' EXIT
echo "serve run $CONFIG (pid $SERVE_PID, log $LOG); waiting for '$MODEL_ID' to be ready..."

deadline=$((SECONDS + READY_TIMEOUT_S))
until curl -sf "$BASE/v1/models/$MODEL_ID" | grep -q '"status": *"ready"'; do
  if ! kill -0 "$SERVE_PID" 2>/dev/null; then echo "serve run exited; see $LOG"; exit 1; fi
  if curl -sf "$BASE/v1/models/$MODEL_ID" | grep -q '"status": *"failed"'; then
    curl -s "$BASE/v1/models/$MODEL_ID"; echo; echo "model failed to load; see $LOG"; exit 1
  fi
  if (( SECONDS > deadline )); then echo "not ready within ${READY_TIMEOUT_S}s; see $LOG"; exit 1; fi
  sleep 5
done
curl -s "$BASE/v1/models/$MODEL_ID"; echo

echo "== non-streaming"
body=$(curl -sf "$BASE/v1/infer" -H 'content-type: application/json' \
  -d "{\"model_id\": \"$MODEL_ID\", \"input\": \"What is the capital of France?\", \"params\": {\"max_tokens\": 32, \"temperature\": 0}}")
echo "$body"
python - "$body" <<'PY'
import json, sys
body = json.loads(sys.argv[1])
assert body["text"].strip(), body
assert body["finish_reason"] in ("stop", "length"), body
assert body["usage"]["completion_tokens"] > 0, body
assert "paris" in body["text"].lower(), "expected Paris in the answer: " + body["text"]
PY

echo "== streaming"
stream=$(curl -sfN "$BASE/v1/infer" -H 'content-type: application/json' \
  -d "{\"model_id\": \"$MODEL_ID\", \"input\": [{\"role\": \"user\", \"content\": \"Count from 1 to 10.\"}], \"params\": {\"max_tokens\": 64, \"temperature\": 0}, \"stream\": true}")
echo "$stream" | head -5; echo "..."
python - "$stream" <<'PY'
import json, sys
lines = [l[len("data: "):] for l in sys.argv[1].splitlines() if l.startswith("data: ")]
assert lines[-1] == "[DONE]", lines[-3:]
events = [json.loads(l) for l in lines[:-1]]
assert not any("error" in e for e in events), events
assert len(events) > 3, "expected several delta events"
assert events[-1]["finish_reason"] in ("stop", "length") and events[-1]["usage"]["completion_tokens"] > 0
print("streamed", len(events), "events:", "".join(e["text"] for e in events)[:80])
PY

echo "== bad request is a 400 with vLLM's message"
code=$(curl -s -o /dev/stderr -w '%{http_code}' "$BASE/v1/infer" -H 'content-type: application/json' \
  -d "{\"model_id\": \"$MODEL_ID\", \"input\": \"hi\", \"params\": {\"max_tokens\": 100000000}}")
echo; [[ "$code" == 400 ]] || { echo "expected 400, got $code"; exit 1; }

echo "GPU smoke test passed ($CONFIG)"
