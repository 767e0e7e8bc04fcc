"""``eager bench --serve``: ``eager serve`` under load, EAGER against parallel.

The server runs in this process (uvicorn on 127.0.0.1, a free port, in a
thread); 1, 4 and 16 clients at once each send requests of n = M choices and
read them as streams, as applications do. Per method and client count: tokens
computed per second (and sequence tokens per second, what the choices hold),
time to first token, and request latency p50/p95.

Requests go to ``/v1/chat/completions``: the packaged models are instruct
models, which given a bare question as a text completion often end at once
(SmolLM2 samples its end token first more than half the time), so a
completion benchmark would time empty trees. Time to first token is the first
chunk carrying a token of any choice: text, or a sequence's end.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx
import numpy as np

from eager.bench.config import BenchConfig

PROMPTS = (
    "A baker makes 12 muffins per tray and bakes 7 trays. She sells all but 9 muffins. How many does she sell?",
    "Tom has 3 boxes of 24 pencils and gives away 17 pencils. How many are left?",
    "A train travels 60 km per hour for 2.5 hours. How far does it go?",
    "Write a short poem about the sea.",
)


@dataclass(frozen=True)
class Load:
    """One measurement's shape: how many clients, requests each, choices and tokens per request."""

    clients: tuple[int, ...] = (1, 4, 16)
    requests_per_client: int = 2
    n: int = 8
    max_tokens: int = 128
    methods: tuple[str, ...] = ("eager-init", "parallel")
    prompts: tuple[str, ...] = PROMPTS


QUICK_LOAD = Load(requests_per_client=1, max_tokens=32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Served:
    """The app under uvicorn in a thread, for as long as the ``with`` lasts."""

    def __init__(self, app, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "_Served":
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the bench server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


async def _one_request(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, float]:
    """Stream one request; its time to first text, latency, tokens computed and sequence tokens."""
    started, first, final = time.perf_counter(), None, {}
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c["delta"].get("content") or c["finish_reason"] for c in chunk["choices"]):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                final = chunk
    latency = time.perf_counter() - started
    return {"ttft_s": latency if first is None else first, "latency_s": latency, "computed": final["usage"]["completion_tokens"], "sequence_tokens": final["eager"]["sequence_tokens"], "choices": final["eager"]["sequences"]}


async def _run_clients(url: str, model: str, method: str, clients: int, load: Load, seed: int) -> dict[str, Any]:
    async def client_loop(c: int, client: httpx.AsyncClient) -> list[dict]:
        out = []
        for r in range(load.requests_per_client):
            prompt = load.prompts[(c + r) % len(load.prompts)]
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], "n": load.n, "max_tokens": load.max_tokens, "seed": seed + c * 1000 + r, "temperature": 0.6, "stream": True, "eager": {"method": method}}
            out.append(await _one_request(client, body))
        return out

    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as client:
        started = time.perf_counter()
        per_client = await asyncio.gather(*(client_loop(c, client) for c in range(clients)))
        wall = time.perf_counter() - started
    return _summary([r for rows in per_client for r in rows], wall, method, clients)


def _summary(rows: list[dict], wall: float, method: str, clients: int) -> dict[str, Any]:
    ttft = np.array([r["ttft_s"] for r in rows])
    latency = np.array([r["latency_s"] for r in rows])
    computed = sum(r["computed"] for r in rows)
    sequence = sum(r["sequence_tokens"] for r in rows)
    return {
        "method": method, "clients": clients, "requests": len(rows), "wall_s": round(wall, 3),
        "choices_per_request": round(float(np.mean([r["choices"] for r in rows])), 2),
        "computed_tokens": computed, "sequence_tokens": sequence,
        "tokens_per_s": round(computed / wall, 1), "sequence_tokens_per_s": round(sequence / wall, 1),
        "ttft_p50_s": round(float(np.percentile(ttft, 50)), 4),
        "latency_p50_s": round(float(np.percentile(latency, 50)), 4), "latency_p95_s": round(float(np.percentile(latency, 95)), 4),
    }


def measure_serving(backend, model: str, *, load: Load = Load(), theta_for=None, seed: int = 0, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every (method, client count) of ``load`` against one in-process server on ``backend``."""
    from eager.serve import ServeConfig, create_app

    port = _free_port()
    config = ServeConfig(port=port, max_n=max(16, load.n), max_queued_requests=max(64, 2 * max(load.clients)), max_tokens_limit=max(2048, load.max_tokens))
    app = create_app(backend, model_name=model, config=config, theta_for=theta_for)
    rows = []
    with _Served(app, port):
        for method in load.methods:
            for clients in load.clients:
                if progress:
                    progress(f"serve: {method}, {clients} clients")
                rows.append(asyncio.run(_run_clients(f"http://127.0.0.1:{port}", model, method, clients, load, seed)))
    return rows


def run_serve_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``eager bench --serve``: the model of ``cfg`` (smollm2 with --quick) served under load."""
    from eager.api import load_backend, resolve_theta

    load = QUICK_LOAD if cfg.quick else Load(n=cfg.M)

    def theta_for(branching):  # --theta: a number, or auto (the model's calibrated or shipped value)
        return resolve_theta(cfg.theta, model=cfg.model_name, branching=branching)

    backend = load_backend(cfg.model_name, ctx=cfg.ctx, threads=cfg.threads, max_sequences=min(64, cfg.ctx))
    try:
        rows = measure_serving(backend, cfg.model_name, load=load, theta_for=theta_for, seed=cfg.seed, progress=progress)
    finally:
        backend.close()
    theta = theta_for(None)
    shape = {k: v for k, v in load.__dict__.items() if k != "prompts"}
    return {"model": cfg.model_name, "theta": theta.value, "theta_source": theta.source, "load": shape, "rows": rows}


def serve_markdown(out: dict[str, Any], command: str = "") -> str:
    load = out["load"]
    lines = [
        f"## eager serve under load: {out['model']}, n = {load['n']}, {load['max_tokens']} max tokens, theta {out['theta']:g} ({out['theta_source']})",
        "",
        *([f"Command: `{command}`", ""] if command else []),
        "| method | clients | requests | choices/request | tokens/s computed | sequence tokens/s | TTFT p50 (s) | latency p50 (s) | latency p95 (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        lines.append(f"| {r['method']} | {r['clients']} | {r['requests']} | {r['choices_per_request']} | {r['tokens_per_s']} | {r['sequence_tokens_per_s']} | {r['ttft_p50_s']} | {r['latency_p50_s']} | {r['latency_p95_s']} |")
    return "\n".join(lines) + "\n"


def serve_plot(out: dict[str, Any], path) -> None:
    """Three panels against concurrent clients, one line per method: tokens/s, TTFT p50, latency p50 and p95."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, panels = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = {"eager-init": "#1f77b4", "parallel": "#ff7f0e"}
    for method in dict.fromkeys(r["method"] for r in out["rows"]):
        rows = [r for r in out["rows"] if r["method"] == method]
        xs, colour = [r["clients"] for r in rows], colours.get(method)
        panels[0].plot(xs, [r["sequence_tokens_per_s"] for r in rows], "o-", color=colour, label=f"{method}: sequence tokens/s")
        panels[0].plot(xs, [r["tokens_per_s"] for r in rows], "s--", color=colour, label=f"{method}: computed tokens/s")
        panels[1].plot(xs, [r["ttft_p50_s"] for r in rows], "o-", color=colour, label=method)
        panels[2].plot(xs, [r["latency_p50_s"] for r in rows], "o-", color=colour, label=f"{method} p50")
        panels[2].plot(xs, [r["latency_p95_s"] for r in rows], "s--", color=colour, label=f"{method} p95")
    for ax, label in zip(panels, ("tokens / s", "time to first token, p50 (s)", "request latency (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(out["load"]["clients"], [str(c) for c in out["load"]["clients"]])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    load = out["load"]
    fig.suptitle(f"eager serve under load: {out['model']}, n = {load['n']}, {load['max_tokens']} max tokens, theta {out['theta']:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
