"""`eager serve` as its users use it: the official openai client, sync and async, on a mock model."""

from __future__ import annotations

import asyncio

import openai
import pytest

from serve_helpers import KEY, MODEL, THETA, client, running_server, served, wait_idle  # noqa: F401 (fixtures)



def test_n_above_one_grows_one_eager_tree_of_at_most_n_sequences(client, served):
    r = client.completions.create(model=MODEL, prompt="What is 2 + 2?", n=8, max_tokens=24, seed=3, temperature=0.6)
    assert 1 <= len(r.choices) <= 8
    assert [c.index for c in r.choices] == list(range(len(r.choices)))
    eager = r.model_extra["eager"]
    assert eager["method"] == "eager-init" and eager["theta"] == THETA and eager["trees"] == 1
    assert len(eager["forks"]) == len(r.choices) - 1 >= 1  # the mock is uncertain often: this prompt forks
    # a shared prefix is computed once: fewer tokens computed than the sequences hold
    assert r.usage.completion_tokens == eager["generated_tokens"] < eager["sequence_tokens"]
    for fork in eager["forks"]:
        child = eager["choices"][fork["child"]]
        assert child["parent"] == fork["parent"] and child["fork_at"] == fork["position"] and fork["entropy"] > THETA
    wait_idle(served[2], served[1])
    assert served[2].cells_in_use == 0


def test_fill_tops_up_to_exactly_n_choices_with_further_trees(client):
    r = client.completions.create(model=MODEL, prompt="zz", n=6, max_tokens=12, seed=5, temperature=0.6, extra_body={"eager": {"fill": True, "M": 2}})
    assert [c.index for c in r.choices] == list(range(6))
    eager = r.model_extra["eager"]
    assert eager["trees"] >= 3 and len(eager["choices"]) == 6
    assert {c["tree"] for c in eager["choices"]} == set(range(eager["trees"]))


def test_n_one_is_plain_sampling_and_parallel_gives_exactly_n(client):
    one = client.completions.create(model=MODEL, prompt="hello", n=1, max_tokens=10, seed=1)
    assert len(one.choices) == 1 and one.model_extra["eager"]["forks"] == []
    par = client.completions.create(model=MODEL, prompt="hello", n=5, max_tokens=10, seed=1, extra_body={"eager": {"method": "parallel"}})
    assert len(par.choices) == 5 and par.model_extra["eager"]["method"] == "parallel"
    # the prompt is computed once per tree; each sample's tokens once: nothing shared
    assert par.usage.completion_tokens == par.model_extra["eager"]["sequence_tokens"]


def test_the_same_seed_gives_the_same_choices(client):
    a = client.completions.create(model=MODEL, prompt="abc", n=4, max_tokens=16, seed=9)
    b = client.completions.create(model=MODEL, prompt="abc", n=4, max_tokens=16, seed=9)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]


def test_chat_completions_answer_with_assistant_messages(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], n=3, max_tokens=8, seed=2)
    assert 1 <= len(r.choices) <= 3 and r.object == "chat.completion"
    assert all(c.message.role == "assistant" and c.message.content for c in r.choices)


def test_stop_strings_end_a_choice_before_the_stop(client):
    free = client.completions.create(model=MODEL, prompt="stop test", n=1, max_tokens=40, seed=4)
    stop = free.choices[0].text[5:7]
    r = client.completions.create(model=MODEL, prompt="stop test", n=1, max_tokens=40, seed=4, stop=[stop])
    assert r.choices[0].text == free.choices[0].text[: free.choices[0].text.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_streaming_sends_each_choice_as_it_grows_then_usage(client):
    full = client.completions.create(model=MODEL, prompt="stream me", n=6, max_tokens=20, seed=7)
    texts: dict[int, str] = {}
    chunks, usage, finish = 0, None, {}
    for chunk in client.completions.create(model=MODEL, prompt="stream me", n=6, max_tokens=20, seed=7, stream=True):
        chunks += 1
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            if c.finish_reason:
                finish[c.index] = c.finish_reason
        usage = chunk.usage or usage
    assert texts == {c.index: c.text for c in full.choices}  # a child's first chunk carries what it inherited
    assert finish == {c.index: c.finish_reason for c in full.choices}
    assert chunks > 2 * len(full.choices) and usage.completion_tokens == full.usage.completion_tokens


def test_chat_streaming_starts_each_choice_with_the_assistant_role(client):
    roles, text = {}, {}
    for chunk in client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hey"}], n=4, max_tokens=12, seed=8, stream=True):
        for c in chunk.choices:
            roles.setdefault(c.index, c.delta.role)
            text[c.index] = text.get(c.index, "") + (c.delta.content or "")
    assert roles and set(roles.values()) == {"assistant"} and all(text.values())


def test_the_async_client_gets_the_same_answers(served, client):
    async def ask():
        aclient = openai.AsyncOpenAI(base_url=served[0] + "/v1", api_key=KEY, max_retries=0, timeout=30)
        calls = [aclient.completions.create(model=MODEL, prompt=f"p{i}", n=4, max_tokens=16, seed=i) for i in range(4)]
        out = await asyncio.gather(*calls)
        await aclient.close()
        return out

    answers = asyncio.run(ask())
    for i, a in enumerate(answers):
        sync = client.completions.create(model=MODEL, prompt=f"p{i}", n=4, max_tokens=16, seed=i)
        assert [c.text for c in a.choices] == [c.text for c in sync.choices]


def test_a_wrong_key_is_an_authentication_error_and_health_is_open(served):
    bad = openai.OpenAI(base_url=served[0] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert err.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    import httpx

    assert httpx.get(served[0] + "/health").json()["status"] == "ok"


def test_bad_requests_are_bad_request_errors_in_openai_shape(client):
    cases = [
        dict(n=10_000),
        dict(max_tokens=10**9),
        dict(extra_body={"eager": {"method": "beam"}}),
        dict(extra_body={"eager": {"M": 9}}, n=4),
        dict(temperature=-1),
        dict(logprobs=3),
    ]
    for extra in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model=MODEL, prompt="x", **{"max_tokens": 4, **extra})
        assert set(err.value.body) == {"message", "type", "param", "code"} and err.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list()] == [MODEL]
