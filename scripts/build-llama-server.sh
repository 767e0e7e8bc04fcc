#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the llama.cpp source vendored in the
# pinned llama-cpp-python sdist, so the tests can drive a real server that runs
# exactly the llama.cpp the in-process backend uses.
#
# Idempotent: when the cached binary exists and answers --version, it does
# nothing (CI can cache ${EAGER_CACHE:-$HOME/.cache/eager}/llama-server).
# Prints the binary's path on stdout as its last line; progress goes to stderr.
#
# Build: CPU only, Release, static llama/ggml libraries (the binary needs only
# system libraries), no curl, no OpenSSL, no web UI (the UI assets would come
# from a Hugging Face download or an npm build; both are switched off), only
# the llama-server target. About 9-10 minutes on 2 cores (see docs/llama-server.md).
# GGML_NATIVE stays on, as in llama-cpp-python's own source build: on a CPU with
# AMX run it with --no-repack (tests/llama_server.py does), see docs/llama-server.md.
#
# Environment:
#   EAGER_CACHE                   cache root (default $HOME/.cache/eager)
#   EAGER_LLAMA_CPP_SDIST         use this llama_cpp_python-0.3.36.tar.gz instead of downloading
#   EAGER_LLAMA_SERVER_CMAKE_ARGS extra cmake arguments, e.g. "-DGGML_NATIVE=OFF" for
#                                 a binary that runs on any x86-64 CPU (slower)
#   EAGER_KEEP_BUILD=1            keep the source and build tree after success
#   CMAKE_BUILD_PARALLEL_LEVEL    compile jobs (default: nproc)
#   PYTHON                        interpreter whose pip downloads the sdist
set -euo pipefail

version=0.3.36
cache="${EAGER_CACHE:-$HOME/.cache/eager}"
root="$cache/llama-server/$version"
bin="$root/llama-server"

log() { echo "build-llama-server: $*" >&2; }

if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    log "already built"
    echo "$bin"
    exit 0
fi

for tool in cmake c++ tar; do
    command -v "$tool" >/dev/null || { log "missing tool: $tool"; exit 1; }
done

mkdir -p "$root"
work="$root/work"          # source + build tree; kept on failure so a rerun resumes
mkdir -p "$work"

# 1. the sdist
sdist="${EAGER_LLAMA_CPP_SDIST:-}"
if [ -z "$sdist" ]; then
    sdist="$work/llama_cpp_python-$version.tar.gz"
    if [ ! -s "$sdist" ]; then
        python="${PYTHON:-}"
        if [ -z "$python" ]; then
            here="$(cd "$(dirname "$0")/.." && pwd)"
            if [ -x "$here/.venv/bin/python" ]; then python="$here/.venv/bin/python"; else python=python3; fi
        fi
        dl="$(mktemp -d)"
        trap 'rm -rf "$dl"' EXIT
        log "downloading llama-cpp-python==$version sdist (pip cache is reused when present)"
        "$python" -m pip download -q "llama-cpp-python==$version" \
            --no-binary :all: --no-deps --disable-pip-version-check -d "$dl" >&2
        mv "$dl"/llama_cpp_python-"$version".tar.gz "$sdist"
    fi
fi
[ -s "$sdist" ] || { log "sdist not found: $sdist"; exit 1; }

# 2. vendor/llama.cpp only
src="$work/llama.cpp"
if [ ! -f "$src/tools/server/CMakeLists.txt" ]; then
    log "extracting vendor/llama.cpp"
    rm -rf "$src" "$work/extract"
    mkdir -p "$work/extract"
    tar -xzf "$sdist" -C "$work/extract" "llama_cpp_python-$version/vendor/llama.cpp"
    mv "$work/extract/llama_cpp_python-$version/vendor/llama.cpp" "$src"
    rm -rf "$work/extract"
    rm -f "$src/.git"   # a submodule gitlink to a directory the sdist lacks
fi

# 3. configure + build (the compiler output, ~50k lines of warnings, goes to
# $work/build.log; its tail is shown on failure)
# (this llama.cpp no longer has LLAMA_CURL: downloads go through cpp-httplib,
# and LLAMA_OPENSSL=OFF leaves it without HTTPS, so nothing links libcurl/libssl.)
# llama.cpp's build-info runs git in the source dir; do not let it find a
# repository above the cache (it would report that repository's commit).
export GIT_CEILING_DIRECTORIES="$work"
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
build="$work/build"
if [ ! -f "$build/CMakeCache.txt" ]; then
    # shellcheck disable=SC2086  # word splitting of the extra args is intended
    cmake -S "$src" -B "$build" "${generator[@]}" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_COMMON=ON \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_OPENSSL=OFF \
        -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF \
        ${EAGER_LLAMA_SERVER_CMAKE_ARGS:-} >"$work/build.log" 2>&1 \
        || { tail -n 60 "$work/build.log" >&2; log "cmake configure failed (log: $work/build.log)"; exit 1; }
fi
jobs="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
log "building llama-server with $jobs jobs (log: $work/build.log)"
start=$(date +%s)
cmake --build "$build" --config Release --target llama-server -j "$jobs" >>"$work/build.log" 2>&1 \
    || { grep -n -m 20 -E "error|Error" "$work/build.log" >&2 || true; tail -n 40 "$work/build.log" >&2
         log "build failed (log: $work/build.log)"; exit 1; }
log "compiled in $(( $(date +%s) - start )) s"

# 4. install atomically and check it runs
built="$build/bin/llama-server"
cp "$built" "$bin.tmp"
"$bin.tmp" --version >&2
mv -f "$bin.tmp" "$bin"
if [ "${EAGER_KEEP_BUILD:-0}" != 1 ]; then rm -rf "$work"; fi
log "installed ($(du -h "$bin" | cut -f1))"
echo "$bin"
