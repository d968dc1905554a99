#!/usr/bin/env bash
# The main job: set up, then `promptembedder demo` (extra arguments are passed on, e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
promptembedder demo "$@"
