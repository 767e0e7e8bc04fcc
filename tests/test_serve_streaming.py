"""Streaming is incremental: an EAGER tree's chunks leave step by step as its branches grow.

The mock's steps are slowed by a small sleep so a tree lasts many steps; each
chunk is stamped with the engine's step count when it arrives (the backend
counts its steps), so a server that buffered a tree until it ended, or queued
requests behind each other, would show here whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import json

import httpx

from eager.backends.mock import MockBackend
from serve_helpers import KEY, MODEL, SlowMock, running_server, wait_idle

HEADERS = {"Authorization": f"Bearer {KEY}"}


def _stamped_chunks(url: str, body: dict, backend: MockBackend) -> list[tuple[int, dict]]:
    """(the engine's step count on arrival, chunk) for every data chunk of a stream."""
    out = []
    with httpx.stream("POST", url + "/v1/completions", json=body, headers=HEADERS, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                out.append((backend.decode_calls, json.loads(line[6:])))
    return out


def test_an_eager_tree_streams_step_by_step_and_children_start_with_their_inherited_text():
    backend = SlowMock()
    max_tokens = 150
    with running_server(backend) as (url, app, _):
        body = {"model": MODEL, "prompt": "a long streamed tree", "n": 4, "max_tokens": max_tokens, "seed": 5, "stream": True}
        chunks = _stamped_chunks(url, body, backend)
        wait_idle(backend, app)
    final = chunks[-1][1]["eager"]
    assert final["sequences"] == 4 and len(final["forks"]) == 3
    steps = backend.decode_calls  # the prompt's step and one per token: about max_tokens
    texts = [(step, c) for step, chunk in chunks for c in chunk["choices"] if c["text"]]
    assert texts[0][0] <= 3  # the first token leaves with the step that made it, not at the end
    assert len({step for step, _ in texts}) > max_tokens // 2  # chunks leave over the tree's whole life
    for fork in final["forks"]:
        child = fork["child"]
        step, first = next((s, c) for s, c in texts if c["index"] == child)
        assert step < steps - 10  # a child streams while the tree still grows
        assert len(first["text"]) == fork["position"] + 1  # its first chunk: what it inherited, then its own token
    assert backend.cells_in_use == 0


def test_sixteen_streams_at_once_all_start_before_any_of_them_ends():
    backend = SlowMock(max_sequences=64, n_ctx=16384)  # 16 trees of at most 4 sequences all fit: none should wait
    with running_server(backend) as (url, app, _):
        async def one(i: int, client: httpx.AsyncClient) -> tuple[int, int]:
            body = {"model": MODEL, "prompt": f"client {i} asks", "n": 4, "max_tokens": 120, "seed": i, "stream": True}
            first = None
            async with client.stream("POST", "/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if first is None and line.startswith("data: {") and any(c["text"] for c in json.loads(line[6:])["choices"]):
                        first = backend.decode_calls
            return first, backend.decode_calls

        async def all_of_them():
            async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=60, limits=httpx.Limits(max_connections=20)) as client:
                return await asyncio.gather(*(one(i, client) for i in range(16)))

        stamps = asyncio.run(all_of_them())
        wait_idle(backend, app)
        preempted = app.state.server.online.engine.preemptions
    firsts, ends = [f for f, _ in stamps], [e for _, e in stamps]
    assert max(firsts) < min(ends) - 60  # every request streamed its first token long before any ended
    assert preempted == 0 and backend.cells_in_use == 0
