"""Hostile input: the server answers every bad request in OpenAI's error shape, never dies, never leaks cells."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_helpers import KEY, MODEL, running_server, wait_idle

AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served():
    with running_server(max_body_bytes=1 << 16) as (url, app, backend):
        yield url, app, backend


def post(url: str, path: str, **kw) -> httpx.Response:
    return httpx.post(url + path, headers={**AUTH, **kw.pop("headers", {})}, timeout=30, **kw)


def assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_malformed_json_is_a_400(served):
    r = post(served[0], "/v1/completions", content=b'{"model": "mock", "prompt": ', headers={"content-type": "application/json"})
    assert assert_openai_error(r, 400)["code"] == "invalid_json"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": MODEL, "prompt": "x", "n": "many"}, "n"),
        ({"model": MODEL, "prompt": 5}, "prompt"),
        ({"model": MODEL, "prompt": "x", "max_tokens": -3}, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "seed": -1}, "seed"),  # found by schemathesis: it failed the engine step
        ({"model": MODEL, "prompt": "x", "n": 10**12}, "n"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 10**12}, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "eager": []}, "eager"),
        ({"model": MODEL, "prompt": "x", "eager": {"theta": "high"}}, "eager.theta"),
        ({"model": MODEL, "prompt": "x", "eager": {"unknown": 1}}, "eager.unknown"),
        ({"model": MODEL, "prompt": []}, "prompt"),
        ({"model": MODEL, "prompt": ["a"] * 65}, "prompt"),  # more prompts than the server holds at once
        ({"model": MODEL, "prompt": "   "}, "prompt"),
        ({"model": MODEL, "prompt": "x" * 5000}, "prompt"),
        ({"model": MODEL}, "prompt"),
    ],
)
def test_wrong_types_and_values_are_400s_naming_the_parameter(served, body, param):
    error = assert_openai_error(post(served[0], "/v1/completions", json=body), 400)
    assert error["param"] is not None and error["param"].startswith(param.split(".")[0])


def test_chat_without_messages_is_a_400(served):
    assert_openai_error(post(served[0], "/v1/chat/completions", json={"model": MODEL, "messages": "hi"}), 400)
    assert_openai_error(post(served[0], "/v1/chat/completions", json={"model": MODEL, "messages": []}), 400)


def test_a_ten_megabyte_body_is_refused_with_413(served):
    big = json.dumps({"model": MODEL, "prompt": "a" * 10_000_000})
    assert assert_openai_error(post(served[0], "/v1/completions", content=big, headers={"content-type": "application/json"}), 413)["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit holds on what arrives
        for _ in range(160):
            yield b"a" * 65536

    r = post(served[0], "/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert_openai_error(r, 413)


def test_unknown_routes_and_methods_answer_in_openai_shape(served):
    assert_openai_error(httpx.get(served[0] + "/v1/nothing", headers=AUTH), 404)
    assert_openai_error(httpx.get(served[0] + "/v1/completions", headers=AUTH), 405)


def test_no_key_is_401_on_every_v1_route_and_the_key_is_not_echoed(served):
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"), ("POST", "/v1/eager/tree")]:
        r = httpx.request(method, served[0] + path, json={}, headers={"Authorization": "Bearer " + KEY[:-1]})
        assert assert_openai_error(r, 401)["code"] == "invalid_api_key" and KEY not in r.text


def test_the_openapi_schema_describes_the_routes(served):
    schema = httpx.get(served[0] + "/openapi.json").json()
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"} <= set(schema["paths"])


values = st.one_of(st.none(), st.booleans(), st.integers(-5, 100), st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=12), st.lists(st.text(max_size=4), max_size=3), st.dictionaries(st.sampled_from(["method", "theta", "M", "W", "fill", "x"]), st.one_of(st.integers(-2, 9), st.text(max_size=6), st.booleans()), max_size=3))
bodies = st.fixed_dictionaries(
    {"model": st.sampled_from([MODEL, "other", 3])},
    optional={k: values for k in ["prompt", "messages", "n", "max_tokens", "temperature", "top_p", "stop", "seed", "stream", "eager", "logprobs"]},
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, path=st.sampled_from(["/v1/completions", "/v1/chat/completions"]))
def test_fuzzed_bodies_never_crash_the_server(served, body, path):
    r = post(served[0], path, json=body)
    assert r.status_code in (200, 400, 404), r.text
    if r.status_code != 200:
        assert_openai_error(r, r.status_code)


def test_after_all_of_it_the_server_is_healthy_and_the_cache_empty(served):
    url, app, backend = served
    wait_idle(backend, app)
    assert httpx.get(url + "/health").json()["status"] == "ok" and backend.cells_in_use == 0
