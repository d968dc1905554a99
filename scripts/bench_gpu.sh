#!/usr/bin/env bash
# Issue 14's table on one GPU: E = Mistral-7B, P = Qwen2.5-0.5B (architecture-only references, random weights, no
# download), bf16 autocast, 128 tokens per text, triplets; LoRA vs PromptEmbedder-query at batch 8, 16, 32 and with
# GradCache 32:8 and 64:16, E reading each text once (the default) and E's full forward (-no-read-once), the steady
# state (documents cached), phase timings (P's generation share) and a torch.profiler table per PromptEmbedder path.
# One process per method; about 5 minutes on an H100. Results in $OUT (default runs/bench_gpu): sweep.json,
# sweep.md (printed last), <method>.log, promptembedder-query/profile_step.txt.
#   bash scripts/bench_gpu.sh                       # on the GPU
#   E=arch:tiny-llama P=arch:tiny-qwen2 SEQ_LEN=16 CONFIGS=4,8:4 WARMUP=1 STEPS=2 bash scripts/bench_gpu.sh  # CPU check
# Extra arguments go to `promptembedder bench sweep` (e.g. --methods lora).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-runs/bench_gpu}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PYTHON" - <<'PY'
import importlib.util
import sys
missing = [m for m in ("torch", "transformers", "peft", "tokenizers", "safetensors", "typer", "rich", "numpy", "yaml",
                       "tqdm", "matplotlib") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {missing}")
import torch
print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""), flush=True)
PY
"$PYTHON" -m promptembedder bench sweep \
    --embedding-model "${E:-arch:mistral-7b}" --prompting-model "${P:-arch:qwen2.5-0.5b}" \
    --methods "${METHODS:-lora,promptembedder-query,promptembedder-query-no-read-once}" --configs "${CONFIGS:-8,16,32,32:8,64:16}" \
    --seq-len "${SEQ_LEN:-128}" --warmup "${WARMUP:-2}" --steps "${STEPS:-5}" --output-dir "$OUT" "$@"
