"""Run a real llama.cpp ``llama-server`` in tests (a helper module, not a test file).

The binary is built by ``scripts/build-llama-server.sh`` (``scripts/setup.sh
--llama-server``) from the llama.cpp vendored in llama-cpp-python 0.3.36 and
cached at ``${EAGER_CACHE:-~/.cache/eager}/llama-server/0.3.36/llama-server``;
``$EAGER_LLAMA_SERVER`` names another binary. This module imports nothing from
``eager`` so it can test the server independently of the client under test.

    with running_llama_server(gguf, n_parallel=4, ctx=4096) as base_url:
        ...  # base_url == "http://127.0.0.1:PORT/v1"

Server flags and the JSON shapes it answers with: docs/llama-server.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"


def llama_server_path() -> Path | None:
    """``$EAGER_LLAMA_SERVER`` when set, else the cached binary, else None (not built)."""
    override = os.environ.get("EAGER_LLAMA_SERVER")
    if override:
        return Path(override).expanduser()
    cache = Path(os.environ.get("EAGER_CACHE") or Path.home() / ".cache" / "eager")
    path = cache / "llama-server" / LLAMA_CPP_PYTHON_VERSION / "llama-server"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def cpu_has_amx() -> bool:
    """Whether /proc/cpuinfo lists amx_tile (the rule src/eager/backends/llama.py uses)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return any(line.startswith("flags") and " amx_tile" in line for line in f)
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_args(
    binary: Path,
    model_path: str | os.PathLike,
    port: int,
    *,
    n_parallel: int,
    ctx: int,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line. Later flags win, so ``extra_args`` can override any of these.

    * ``-c ctx --kv-unified``: one KV buffer of ``ctx`` cells shared by all
      slots, so any one request may use up to ``ctx`` tokens (without
      ``--kv-unified`` each slot gets ``ctx / n_parallel``).
    * ``--parallel``: the number of requests decoded together (``/props``
      reports it as ``total_slots``).
    * ``--no-warmup``: skip the empty warm-up decode (faster start).
    * ``--no-webui``: the binary has no UI assets anyway.
    * ``--no-repack`` on CPUs with AMX (unless ``EAGER_EXTRA_BUFTS=1``): the
      binary is built with ``-march=native``, and ggml's AMX weight buffers
      crash the first decode (SIGSEGV in ``ggml_backend_amx_mul_mat``) on
      such CPUs in a sandbox. It is the server's spelling of
      ``use_extra_bufts = False``, which the in-process backend sets under the
      same rule, so both run the same CPU kernels.
    Nothing else is needed for the endpoints the tests use: ``logprobs`` /
    ``n_probs``, ``/tokenize``, ``/detokenize``, ``/apply-template`` (jinja
    templates are on by default), ``/props`` (GET) and the prompt cache
    (``cache_prompt`` defaults to true) all work with the defaults.
    """
    repack = ["--no-repack"] if cpu_has_amx() and os.environ.get("EAGER_EXTRA_BUFTS") != "1" else []
    return [
        str(binary),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--model", str(model_path),
        "--ctx-size", str(ctx),
        "--parallel", str(n_parallel),
        "--kv-unified",
        "--no-warmup",
        "--no-webui",
        *repack,
        *extra_args,
    ]


def _tail(path: Path, n_chars: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-n_chars:]


def _health_ok(root: str) -> bool:
    try:
        with urllib.request.urlopen(root + "/health", timeout=2) as response:
            return response.status == 200 and json.loads(response.read()).get("status") == "ok"
    except (urllib.error.URLError, OSError, ValueError):
        return False  # 503 {"error": {"message": "Loading model", ...}} while loading, or not listening yet


@contextlib.contextmanager
def running_llama_server(
    model_path: str | os.PathLike,
    *,
    n_parallel: int = 4,
    ctx: int = 4096,
    extra_args: Sequence[str] = (),
    binary: str | os.PathLike | None = None,
    startup_timeout_s: float = 60.0,
    stop_timeout_s: float = 10.0,
) -> Iterator[str]:
    """Start llama-server on a free 127.0.0.1 port; yield ``http://127.0.0.1:PORT/v1``.

    Waits until ``GET /health`` answers ``{"status": "ok"}``; raises
    RuntimeError with the tail of the server's log when it exits or does not
    get ready within ``startup_timeout_s``. On exit it sends SIGTERM and
    SIGKILLs after ``stop_timeout_s``.
    """
    exe = Path(binary) if binary is not None else llama_server_path()
    if exe is None:
        raise RuntimeError("llama-server is not built: run scripts/setup.sh --llama-server")
    if not Path(model_path).is_file():
        raise RuntimeError(f"model file not found: {model_path}")
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        log_path = Path(tmp) / "server.log"
        proc = None
        for attempt in range(3):  # the free port may be taken before the server binds it
            port = free_port()
            root = f"http://127.0.0.1:{port}"
            args = server_args(exe, model_path, port, n_parallel=n_parallel, ctx=ctx, extra_args=extra_args)
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + startup_timeout_s
            while True:
                if proc.poll() is not None:
                    tail = _tail(log_path)
                    if attempt < 2 and ("bind" in tail.lower() or "address already in use" in tail.lower()):
                        break  # retry on another port
                    raise RuntimeError(
                        f"llama-server exited with code {proc.returncode} before it was ready\n"
                        f"command: {' '.join(args)}\n--- server log (tail) ---\n{tail}"
                    )
                if _health_ok(root):
                    break
                if time.monotonic() > deadline:
                    _stop(proc, stop_timeout_s)
                    raise RuntimeError(
                        f"llama-server did not answer /health within {startup_timeout_s:.0f} s\n"
                        f"command: {' '.join(args)}\n--- server log (tail) ---\n{_tail(log_path)}"
                    )
                time.sleep(0.1)
            if proc.poll() is None:
                break
        assert proc is not None
        try:
            yield root + "/v1"
        finally:
            _stop(proc, stop_timeout_s)


def _stop(proc: subprocess.Popen, timeout_s: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
