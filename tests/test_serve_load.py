"""Many clients at once: all answered, each tree as if it ran alone, the cache empty afterwards."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from eager.api import run_requests
from eager.backends.mock import MockBackend
from eager.core.config import BranchingConfig, SamplingConfig
from eager.core.tree import TreeRequest
from serve_helpers import KEY, MODEL, THETA, SlowMock, running_server, wait_idle




def alone(prompt: str, n: int, max_tokens: int, seed: int):
    """The same request grown by the offline engine on a fresh mock, by itself."""
    request = TreeRequest(prompt, "eager-init", BranchingConfig(max_sequences=n, theta=THETA), SamplingConfig(max_tokens=max_tokens, temperature=0.8, seed=seed), chat=False)
    return run_requests(MockBackend(), [request])[0]


def test_sixteen_concurrent_clients_get_the_trees_they_would_get_alone():
    backend = MockBackend(n_ctx=700)  # about two trees fit: the rest queue, some are preempted
    with running_server(backend) as (url, app, _):
        async def ask(i: int):
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)
            try:
                return await client.completions.create(model=MODEL, prompt=f"question number {i}", n=8, max_tokens=40, seed=i, temperature=0.8)
            finally:
                await client.close()

        async def all_of_them():
            return await asyncio.gather(*(ask(i) for i in range(16)))

        answers = asyncio.run(all_of_them())
        wait_idle(backend, app)
        assert backend.cells_in_use == 0 and app.state.server.online.held == 0
        metrics = httpx.get(url + "/metrics").text
    assert max(backend.batch_sizes) > 8  # branches of several requests shared steps
    for i, answer in enumerate(answers):
        expected = alone(f"question number {i}", 8, 40, i)
        assert [c.text for c in answer.choices] == [s.text for s in expected.sequences]
        assert [(f["parent"], f["child"], f["position"]) for f in answer.model_extra["eager"]["forks"]] == [(f.parent, f.child, f.position) for f in expected.forks]
        assert answer.usage.completion_tokens == expected.generated_tokens
    assert 'eager_requests_total{endpoint="/v1/completions",status="200"} 16.0' in metrics
    assert "eager_step_seconds_count" in metrics and "eager_forks_total" in metrics


def test_a_client_that_disconnects_mid_stream_has_its_branches_released():
    backend = SlowMock()  # never ends on its own; a few ms a step, so a fast machine cannot finish it early
    with running_server(backend) as (url, app, _):
        body = {"model": MODEL, "prompt": "never ending", "n": 4, "max_tokens": 2000, "stream": True}
        with httpx.stream("POST", url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: {") for line in got)
            assert backend.cells_in_use > 0
        started = time.monotonic()
        wait_idle(backend, app, timeout=5)
        assert backend.cells_in_use == 0 and app.state.server.online.held == 0
        assert time.monotonic() - started < 2
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        assert client.completions.create(model=MODEL, prompt="still here", max_tokens=5).choices[0].text


def test_a_full_server_answers_429_with_retry_after():
    backend = SlowMock()  # never ends on its own; a few ms a step, so a fast machine cannot finish it early
    with running_server(backend, max_queued_requests=1) as (url, app, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=30)
        stream = client.completions.create(model=MODEL, prompt="hold the only place", n=2, max_tokens=2000, stream=True)
        next(iter(stream))
        with pytest.raises(openai.RateLimitError) as err:
            client.completions.create(model=MODEL, prompt="no room", max_tokens=4)
        assert err.value.response.headers["retry-after"] == "1"
        assert err.value.body["code"] == "rate_limit_exceeded"
        stream.close()
        wait_idle(backend, app)
        assert backend.cells_in_use == 0
        assert client.completions.create(model=MODEL, prompt="room again", max_tokens=4).choices


def test_a_request_past_the_time_out_gets_504_and_leaves_the_cache():
    backend = SlowMock()  # never ends on its own; a few ms a step, so a fast machine cannot finish it early
    with running_server(backend, request_timeout_s=0.5) as (url, app, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=30)
        with pytest.raises(openai.APIStatusError) as err:
            client.completions.create(model=MODEL, prompt="too long", n=2, max_tokens=2000)
        assert err.value.status_code == 504 and err.value.body["type"] == "timeout_error"
        wait_idle(backend, app)
        assert backend.cells_in_use == 0


def test_a_slow_reader_does_not_hold_up_other_clients():
    backend = SlowMock()  # never ends on its own; a few ms a step, so a fast machine cannot finish it early
    with running_server(backend) as (url, app, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=30)
        slow = client.completions.create(model=MODEL, prompt="slow reader", n=2, max_tokens=400, stream=True)
        next(iter(slow))  # then reads nothing for a while
        started = time.monotonic()
        quick = client.completions.create(model=MODEL, prompt="quick", n=4, max_tokens=20, seed=1)
        assert quick.choices and time.monotonic() - started < 10
        slow.close()
        wait_idle(backend, app)
        assert backend.cells_in_use == 0
