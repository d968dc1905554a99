#!/usr/bin/env bash
# Short tiny-model runs (fixed seed, every step logged) whose log.csv losses must not change across a refactor.
# Usage: scripts/compare_refactor_logs.sh OUT_DIR   (then diff the loss columns of two OUT_DIRs)
set -euo pipefail
out=$(realpath -m "${1:?output folder}")
mkdir -p "$out"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
py=${PYTHON:-python}
cli=${PROMPTEMBEDDER:-promptembedder}
"$py" - "$out" <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, "tests")
from tiny_models import CORPUS, make_tiny_model
out = Path(sys.argv[1])
for kind in ("llama", "bert", "qwen2"):
    if not (out / "models" / kind).exists():
        make_tiny_model(kind, out / "models" / kind)
rows = [{"query": CORPUS[i], "positive": CORPUS[i + 1], "negative": CORPUS[(i + 7) % len(CORPUS)]}
        for i in range(0, 32)]
(out / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
PY
m="$out/models"
common="prompting_model: $m/llama
embedding_model: $m/bert
train_data: [{path: $out/pairs.jsonl, instruction: Find a paraphrase.}]
device: cpu
max_steps: 10
batch_size: 4
logging_steps: 1
eval_steps: 5
eval_max_pairs: 40
save_steps: 5
seed: 0
learning_rate: 0.001
show_progress_bar: false"
run() {  # name, extra YAML lines
  printf '%s\n%s\noutput_dir: %s\noverwrite: true\n' "$common" "$2" "$out/runs/$1" > "$out/$1.yaml"
  "$cli" train "$out/$1.yaml" > "$out/$1.out" 2>&1 || { echo "run $1 failed"; tail "$out/$1.out"; exit 1; }
}
run pe_both "prompt_on: both"
run pe_both_gc "prompt_on: both
grad_cache_chunk_size: 2
gradient_accumulation_steps: 2"
run pe_query "prompt_on: query"
run pe_query_gc "prompt_on: query
grad_cache_chunk_size: 3"
run pe_lora_tau "prompting_trainable: lora
tau_start: 2.0
tau_end: 0.5
hard: true"
run lora "method: lora"
run lora_gc "method: lora
grad_cache_chunk_size: 2"
run prompt_tuning "method: prompt-tuning
prompt_position: suffix"
run prompt_tuning_query_gc "method: prompt-tuning
prompt_on: query
grad_cache_chunk_size: 2"
"$cli" transfer --from "$out/runs/pe_both/final" --embedding-model "$m/qwen2" --output-dir "$out/runs/transfer" \
  --max-steps 10 --batch-size 4 --eval-steps 5 --train-data "$out/pairs.jsonl" --device cpu --overwrite \
  > "$out/transfer.out" 2>&1 || { echo "transfer failed"; tail "$out/transfer.out"; exit 1; }
for d in "$out"/runs/*/; do
  cut -d, -f1,2,3,4,5,9 "$d/log.csv" > "$out/$(basename "$d").losses.csv"
done
echo "done: $out/*.losses.csv"
