"""Ctrl-C and SIGTERM end `eager eval` within seconds, keep every record, and a rerun completes it.

The CLI runs as a subprocess against a scripted server on 127.0.0.1 (the
mock backend's model, so every prompt has its own seeded, deterministic
trees; a delay per token keeps the run going long enough to interrupt). An
interrupted run must exit 130 with the one line "eager: interrupted", leave
only whole record lines, close its streams, and the same command run again
must end with exactly the records of an uninterrupted run: no prompt lost,
none written twice, nothing already written rewritten.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from eager.cli import main
from scripted_server import LogitsScript, ScriptedServer, serving

METHODS = ("parallel", "eager-init", "eager-adapt")
RECORD_FILES = (*(f"{m}.jsonl" for m in METHODS), ".extra-eager-adapt.jsonl")
TIMING = ("wall_s", "latency_s")
N_PROBLEMS = 8
EXIT_WITHIN_S = 5.0


@pytest.fixture
def slow_server():
    """A deterministic server that takes ``delay_s`` per streamed token."""
    server = ScriptedServer(LogitsScript(), delay_s=0.05)
    with serving(server) as url:
        yield server, url


def eval_args(url: str, dataset: Path, out: Path, *extra: str) -> list[str]:
    return [
        "eval", "--model", f"openai:{url}", "--raw-prompt", "--dataset", str(dataset), "--out", str(out),
        "--methods", ",".join(METHODS), "-M", "4", "--theta", "2.98", "--no-dynamic-theta", "--max-tokens", "30",
        "--template", "{question}", *extra,
    ]  # fmt: skip


def start_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "eager.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def record_lines(out: Path, name: str) -> list[str]:
    path = out / name
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def wait_for(condition, cli: subprocess.Popen, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert cli.poll() is None, f"the run ended before {what}: {cli.communicate()}"
        assert time.monotonic() < deadline, f"no {what} within {within_s} s"
        time.sleep(0.05)


def interrupt(cli: subprocess.Popen, signum: int) -> str:
    """Send ``signum``; the run must end within seconds with exit 130 and one line. Returns stderr."""
    start = time.monotonic()
    cli.send_signal(signum)
    _, err = cli.communicate(timeout=30)
    elapsed = time.monotonic() - start
    assert elapsed < EXIT_WITHIN_S, (elapsed, err)
    assert cli.returncode == 130 and "Traceback" not in err and "Task was destroyed" not in err, err
    assert err.strip().splitlines()[-1] == "eager: interrupted", err  # (with -q, only warnings come before it)
    assert all("WARNING" in line for line in err.strip().splitlines()[:-1]), err
    return err


def whole_lines(out: Path) -> dict[str, bytes]:
    """Every record file, checked: only whole JSON lines, each ending in a newline. Returns their bytes."""
    kept = {}
    for name in RECORD_FILES:
        path = out / name
        data = path.read_bytes() if path.exists() else b""
        assert not data or data.endswith(b"\n"), f"{name} ends in a half-written line"
        for line in data.splitlines():
            json.loads(line)
        kept[name] = data
    return kept


def records(out: Path) -> dict[str, list[dict]]:
    """The records of a run, minus timings, in a fixed order."""
    rows = {name: [json.loads(line) for line in record_lines(out, name)] for name in RECORD_FILES}
    return {
        name: sorted(({k: v for k, v in r.items() if k not in TIMING} for r in found), key=lambda r: (r["id"], r["M"], r.get("attempt", 0)))
        for name, found in rows.items()
    }


def assert_resumed_exactly(out: Path, before: dict[str, bytes], reference: dict[str, list[dict]]) -> None:
    for name, data in before.items():
        assert (out / name).read_bytes().startswith(data), f"{name}: a record written before the interrupt changed"
    for method in METHODS:
        assert Counter(r["id"] for r in records(out)[f"{method}.jsonl"]) == {f"p{i}": 1 for i in range(N_PROBLEMS)}
    assert records(out) == reference


def wait_streams_closed(server: ScriptedServer, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while server.open_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.open_streams == 0, "the interrupted run left streams open on the server"


def test_sigint_and_sigterm_end_a_remote_eval_within_seconds_and_a_rerun_completes_it_exactly(tmp_path, dataset, slow_server):
    server, url = slow_server
    assert main(eval_args(url, dataset, tmp_path / "reference", "-q")) == 0
    reference = records(tmp_path / "reference")
    assert all(len(reference[f"{m}.jsonl"]) == N_PROBLEMS for m in METHODS) and reference[".extra-eager-adapt.jsonl"]

    out = tmp_path / "out"
    args = eval_args(url, dataset, out, "-q")
    # SIGTERM while the first trees grow, once some have finished: those are recorded at once
    cli = start_cli(args)
    wait_for(lambda: record_lines(out, "parallel.jsonl") or record_lines(out, "eager-init.jsonl"), cli, 60, "first record")
    interrupt(cli, signal.SIGTERM)
    wait_streams_closed(server)
    before = whole_lines(out)
    first_phase = len(record_lines(out, "parallel.jsonl")) + len(record_lines(out, "eager-init.jsonl"))
    assert 1 <= first_phase < 2 * N_PROBLEMS, "a tree is recorded as it finishes, not when the whole batch does"

    # Ctrl-C during the reallocation, after the first records
    cli = start_cli(args)
    wait_for(lambda: len(record_lines(out, "eager-adapt.jsonl")) >= 1, cli, 60, "eager-adapt record")
    interrupt(cli, signal.SIGINT)
    wait_streams_closed(server)
    after = whole_lines(out)
    assert len(record_lines(out, "eager-init.jsonl")) == N_PROBLEMS
    assert len(record_lines(out, "eager-adapt.jsonl")) < N_PROBLEMS, "the run must be stopped before it ends"
    for name, data in before.items():
        assert after[name].startswith(data)

    assert main(args) == 0
    assert_resumed_exactly(out, after, reference)


# -- on Ray workers -------------------------------------------------------------------------------


def descendants(pid: int) -> dict[int, str]:
    """The processes under ``pid`` (Ray's head, raylet, workers), by pid, with their names."""
    parents, names = {}, {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit():
            name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            parents[int(entry.name)], names[int(entry.name)] = int(rest[1]), name
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                found[child] = names[child]
                frontier.append(child)
    return found


def assert_gone(processes: dict[int, str], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    alive = processes
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = {pid: name for pid, name in alive.items() if Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)}
    assert not alive, f"left running after the interrupt: {alive}"


def _state(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]).lower()
    except (OSError, IndexError):
        return "zombie"


def interrupt_on_ray(cli: subprocess.Popen, signum: int, server: ScriptedServer, ready) -> None:
    """Once ``ready()``, stop the run with ``signum``: one line, exit 130, every Ray process and stream gone."""
    wait_for(lambda: any(name.startswith("ray::Worker") for name in descendants(cli.pid).values()) and ready(), cli, 120, "Ray workers")
    started = descendants(cli.pid)
    assert any(name == "raylet" for name in started.values()), started  # a cluster of its own, started by this run
    err = interrupt(cli, signum)
    assert "SIGTERM received" not in err and "Traceback" not in err, err
    assert_gone(started)
    wait_streams_closed(server)


@pytest.mark.slow
def test_sigint_and_sigterm_end_a_ray_eval_within_seconds_release_its_cluster_and_a_rerun_completes_it(tmp_path, dataset, slow_server):
    """Three Ray cluster starts (50 to 90 s on two cores): Ctrl-C, SIGTERM, then the rerun."""
    server, url = slow_server
    assert main(eval_args(url, dataset, tmp_path / "reference", "-q")) == 0
    reference = records(tmp_path / "reference")

    out = tmp_path / "out"
    args = eval_args(url, dataset, out, "-q", "--ray", "--ray-workers", "2", "--ray-cpus-per-worker", "1")
    streams = server.streams
    interrupt_on_ray(start_cli(args), signal.SIGINT, server, lambda: server.streams >= streams + 8)  # trees streaming
    before = whole_lines(out)

    cli = start_cli(args)
    interrupt_on_ray(cli, signal.SIGTERM, server, lambda: len(record_lines(out, "eager-adapt.jsonl")) >= 1)  # reallocating
    after = whole_lines(out)
    assert len(record_lines(out, "eager-init.jsonl")) == N_PROBLEMS
    assert len(record_lines(out, "eager-adapt.jsonl")) < N_PROBLEMS, "the run must be stopped before it ends"
    for name, data in before.items():
        assert after[name].startswith(data)

    cli = start_cli(args)
    _, err = cli.communicate(timeout=300)
    assert cli.returncode == 0, err
    assert_resumed_exactly(out, after, reference)
