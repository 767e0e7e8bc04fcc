"""How many branch streams one remote driver holds, and what they cost it (slow).

A scripted server (tests/scripted_server.py) runs in its own process on
127.0.0.1 and streams every token after a small delay; the driver runs in
another process, which measures itself: peak concurrent streams, wall-clock,
CPU seconds (``resource.getrusage``) and peak RSS. Run it by hand for the
numbers in docs/remote.md::

    .venv/bin/python tests/test_remote_scale.py --prompts 64 -M 8 --method parallel --max-tokens 200 --delay 0.01
    .venv/bin/python tests/test_remote_scale.py --prompts 64 -M 8 --method eager-init --max-tokens 200 --delay 0.01
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def measure(url: str, *, prompts: int, M: int, method: str, max_tokens: int, theta: float) -> dict:
    """Grow the trees on ``url`` from this process; what it took."""
    from eager.core.config import BranchingConfig, SamplingConfig
    from eager.core.tree import tree_requests
    from eager.remote import connect, run_remote
    from eager.remote.http import run_sync

    branching = BranchingConfig(max_sequences=M, theta=theta, dynamic_theta=False, end_of_thinking="")
    requests = tree_requests([f"prompt {i}" for i in range(prompts)], method=method, branching=branching,
                             sampling=SamplingConfig(max_tokens=max_tokens), chat=False)  # fmt: skip
    server = connect(url)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    results, stats = run_sync(lambda: run_remote(server, requests, max_concurrency=prompts * M))
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "prompts": prompts, "M": M, "method": method, "max_tokens": max_tokens,
        "sequences": sum(len(r.sequences) for r in results),
        "tokens": sum(r.generated_tokens for r in results),
        "requests": stats.requests,
        "peak_streams": stats.peak_streams,
        "wall_s": round(wall, 2),
        "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
        "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
    }  # fmt: skip


def start_server(delay: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(HERE / "scripted_server.py"), "--port", "0", "--delay", str(delay)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"the scripted server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/v1"


def run_measurement(args: list[str]) -> dict:
    """This file as a script, in a fresh process (so its RSS is the driver's alone)."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_one_driver_holds_512_branch_streams_at_once():
    numbers = run_measurement(["--prompts", "64", "-M", "8", "--method", "parallel", "--max-tokens", "100", "--delay", "0.01"])
    assert numbers["sequences"] == 512 and numbers["tokens"] == 512 * 100
    assert numbers["peak_streams"] == 512
    assert numbers["peak_rss_mb"] < 500


@pytest.mark.slow
def test_eager_init_trees_reach_512_streams_too():
    numbers = run_measurement(["--prompts", "64", "-M", "8", "--method", "eager-init", "--max-tokens", "100", "--delay", "0.01"])
    assert numbers["sequences"] == 512
    assert numbers["peak_streams"] >= 400


def main() -> None:
    parser = argparse.ArgumentParser(description="one remote driver against a scripted server in another process")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("-M", type=int, default=8)
    parser.add_argument("--method", default="parallel", choices=("parallel", "eager-init"))
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--theta", type=float, default=1.0, help="the scripted server's entropy is 1.60 at every 6th token, 0.22 elsewhere")
    parser.add_argument("--delay", type=float, default=0.01, help="the server's pause before each token, seconds")
    args = parser.parse_args()
    proc, url = start_server(args.delay)
    try:
        numbers = measure(url, prompts=args.prompts, M=args.M, method=args.method, max_tokens=args.max_tokens, theta=args.theta)
    finally:
        proc.terminate()
        proc.wait(10)
    server = resource.getrusage(resource.RUSAGE_CHILDREN)  # the server process, ended now
    print(json.dumps({**numbers, "server_cpu_s": round(server.ru_utime + server.ru_stime, 2), "server_delay_s": args.delay}))


if __name__ == "__main__":
    main()
