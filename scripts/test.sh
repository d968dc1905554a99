#!/usr/bin/env bash
# The test suite: set up, lint, then every test (the slow ones load the real offline models; they run too).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check src tests experiments
# Two workers (pytest-xdist), one test file each at a time so a file's module fixtures are built once; most tests run
# on one thread, so two workers keep both cores busy (conftest.py starts the slowest files first). `-n 0` runs it
# serially. MiniLM's full SciFact calibration (5 min) runs only when asked for: `-m full_calibration`.
python -m pytest -q -n 2 --dist loadfile "$@"
