#!/usr/bin/env bash
# infinity-emb on exported folders (see README.md here). Needs the project's venv (.venv) and a scratch venv with
# infinity-emb, which cannot share the project's: python -m venv /tmp/infvenv && /tmp/infvenv/bin/pip install
# torch==2.13.0 "infinity-emb[server,torch]==0.0.78". Usage: bash experiments/engines/run_infinity.sh [WORK]
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-/tmp/engine_work}
INFINITY=${INFINITY:-/tmp/infvenv/bin/infinity_emb}
mkdir -p "$WORK"
[ -d "$WORK/minilm/export" ] || .venv/bin/python experiments/engines/infinity_check.py export "$WORK"
port=7990
for name in smollm2 minilm; do
  .venv/bin/python experiments/engines/st3_compat.py "$WORK/$name/export" "$WORK/$name/export-st3"
  port=$((port + 1))
  # DO_NOT_TRACK: infinity otherwise sends usage statistics, and this machine reaches no such host
  DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0 HF_HUB_OFFLINE=1 "$INFINITY" v2 --model-id "$WORK/$name/export-st3" \
      --engine torch --device cpu --host 127.0.0.1 --port "$port" --no-bettertransformer \
      --no-model-warmup --batch-size 8 --dtype "${DTYPE:-float32}" > "$WORK/$name/infinity.log" 2>&1 &
  server=$!
  for _ in $(seq 300); do curl -sf "127.0.0.1:$port/health" > /dev/null && break; sleep 2; done
  .venv/bin/python experiments/engines/infinity_check.py query "$WORK" "$name" "$port" || true
  kill -9 "$server"; wait "$server" 2>/dev/null || true
done
