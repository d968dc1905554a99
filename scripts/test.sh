#!/usr/bin/env bash
# The test suite: set up, lint, then every test (the slow ones load the real offline models; they run too).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check src tests
python -m pytest -q "$@"
