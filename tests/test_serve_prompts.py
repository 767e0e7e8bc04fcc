"""A list of prompts in one /v1/completions request: one tree each, choices numbered prompt-major as OpenAI does."""

from __future__ import annotations

import openai
import pytest

from serve_helpers import KEY, MODEL, client, running_server, served, wait_idle  # noqa: F401 (fixtures)

PROMPTS = ["What is 2 + 2?", "Name a colour", "zz"]
N = 4



def ask(client, prompt, **kw):
    return client.completions.create(model=MODEL, prompt=prompt, n=N, max_tokens=20, seed=7, temperature=0.7, **kw)


def test_each_prompt_grows_its_own_tree_and_its_choices_start_at_prompt_times_n(client, served):
    together = ask(client, PROMPTS)
    alone = [ask(client, p) for p in PROMPTS]
    for i, single in enumerate(alone):
        mine = [c for c in together.choices if c.index // N == i]
        assert [c.index for c in mine] == [i * N + c.index for c in single.choices]  # gaps where a tree needed fewer than n
        assert [c.text for c in mine] == [c.text for c in single.choices]
    assert len({len(a.choices) for a in alone}) > 1  # the trees differ in size: the numbering above is not trivially dense
    eager = together.model_extra["eager"]
    assert [c["prompt"] for c in eager["choices"]] == [c["index"] // N for c in eager["choices"]]
    assert all(f["parent"] // N == f["child"] // N == f["prompt"] for f in eager["forks"])
    assert together.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone)
    assert together.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    wait_idle(served[2], served[1])
    assert served[2].cells_in_use == 0


def test_streamed_prompts_give_the_same_choices(client):
    texts: dict[int, str] = {}
    final = None
    for chunk in ask(client, PROMPTS, stream=True):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
        final = chunk if chunk.usage else final
    whole = ask(client, PROMPTS)
    assert texts == {c.index: c.text for c in whole.choices}
    assert final.usage.completion_tokens == whole.usage.completion_tokens


def test_fill_makes_the_numbering_dense(client):
    r = ask(client, PROMPTS, extra_body={"eager": {"fill": True}})
    assert [c.index for c in r.choices] == list(range(N * len(PROMPTS)))


def test_too_many_prompts_is_a_bad_request():
    with running_server(max_queued_requests=2) as (url, app, backend):
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=30)
        with pytest.raises(openai.BadRequestError, match="between 1 and 2 prompts"):
            ask(client, PROMPTS)
        assert len(ask(client, PROMPTS[:2]).choices) >= 2
