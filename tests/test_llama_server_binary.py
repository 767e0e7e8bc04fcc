"""The real llama.cpp ``llama-server`` (built from llama-cpp-python 0.3.36's llama.cpp).

These tests pin down what the server answers, with urllib and json only and no
``eager`` import, so the remote client in src/eager/remote can be written and
checked against facts. They skip when the binary is not built
(``scripts/setup.sh --llama-server``). docs/llama-server.md has the full shapes.

Streamed ``POST /v1/completions`` with ``"logprobs": K`` (or ``"n_probs": K``;
both set the same field, ``n_probs`` wins when both are given): one SSE event
``data: {json}`` per generated token, then a final event, then ``data: [DONE]``::

    {"choices": [{"text": " Paris", "index": 0, "finish_reason": null,
                  "logprobs": {"content": [
                      {"id": 7042, "token": " Paris", "bytes": [32, 80, 97, 114, 105, 115],
                       "logprob": -0.248,
                       "top_logprobs": [{"id": 7042, "token": " Paris", "bytes": [...], "logprob": -0.248},
                                        {"id": 260, "token": " the", "bytes": [...], "logprob": -2.78},
                                        ...K entries, most likely first]}]}}],
     "created": 1795997236, "model": "<model id>", "system_fingerprint": "b0-unknown",
     "object": "text_completion", "id": "chatcmpl-..."}

``logprobs.content`` always holds exactly one entry: the sampled token, with its
id. That is the only place the stream carries token ids (``return_tokens`` is
ignored on /v1/completions; it fills ``tokens`` only on the native /completion).
Tokens that end inside a UTF-8 character are not streamed at all (see
test_tokens_ending_inside_a_utf8_character_are_not_streamed).
Log-probabilities are those of the raw model distribution (softmax of the
logits before temperature/top-k/top-p), so the sampled token need not be the
top-1 one. The end-of-generation token is streamed too, as an ordinary chunk
with ``text: ""`` and its id (2, ``<|im_end|>``, for SmolLM2), before the final
chunk::

    {"choices": [{"text": "", "index": 0, "logprobs": null, "finish_reason": "stop" | "length"}],
     ..., "usage": {"completion_tokens": 4, "prompt_tokens": 5, "total_tokens": 9,
                    "prompt_tokens_details": {"cached_tokens": 0}},
     "timings": {"cache_n": 0, "prompt_n": 5, "prompt_ms": ..., "prompt_per_token_ms": ...,
                 "prompt_per_second": ..., "predicted_n": 4, "predicted_ms": ...,
                 "predicted_per_token_ms": ..., "predicted_per_second": ...}}
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_server import llama_server_path, running_llama_server

N_PARALLEL = 4
CTX = 4096
PARIS_PROMPT = "The capital of France is"
PARIS_IDS = [504, 3575, 282, 4649, 314]  # SmolLM2's tokens for PARIS_PROMPT


@pytest.fixture(scope="module")
def smollm_gguf() -> Path:
    """The packaged SmolLM2-135M GGUF, found by eager in a subprocess (nothing imported here)."""
    code = "from eager.models import resolve_model; print(resolve_model('smollm2-135m'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"cannot resolve smollm2-135m:\n{done.stderr[-2000:]}"
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.suffix == ".gguf", path
    return path


@pytest.fixture(scope="module")
def server(smollm_gguf: Path) -> Iterator[str]:
    """Base URL ``http://127.0.0.1:PORT/v1`` of one server shared by this module's tests."""
    if llama_server_path() is None:
        pytest.skip("llama-server is not built: run scripts/setup.sh --llama-server")
    with running_llama_server(smollm_gguf, n_parallel=N_PARALLEL, ctx=CTX) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def root(server: str) -> str:
    """The server's root URL, for the non-OpenAI endpoints (/health, /props, /tokenize, ...)."""
    return server.removesuffix("/v1")


def call(method: str, url: str, body: dict | None = None, timeout: float = 120.0) -> tuple[int, dict]:
    """(HTTP status, JSON body); error statuses are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def stream(url: str, body: dict, timeout: float = 120.0) -> list[dict]:
    """The ``data:`` events of an SSE response, in order; checks it ends with ``[DONE]``."""
    request = urllib.request.Request(
        url, data=json.dumps({**body, "stream": True}).encode(), headers={"Content-Type": "application/json"}
    )
    events: list[dict] = []
    done = False
    with urllib.request.urlopen(request, timeout=timeout) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for raw in response:
            line = raw.decode().rstrip("\r\n")
            if not line:
                continue
            assert line.startswith("data: "), line
            payload = line[len("data: "):]
            if payload == "[DONE]":
                done = True
                continue
            assert not done, "event after [DONE]"
            events.append(json.loads(payload))
    assert done, "stream did not end with data: [DONE]"
    return events


def test_health_and_props(server: str, root: str) -> None:
    assert call("GET", root + "/health") == (200, {"status": "ok"})
    status, props = call("GET", root + "/props")
    assert status == 200
    assert props["total_slots"] == N_PARALLEL
    assert props["default_generation_settings"]["n_ctx"] == CTX  # --kv-unified: every slot may use all of -c
    assert props["bos_token"] == "<|im_start|>"
    assert props["eos_token"] == "<|im_end|>"
    assert "<|im_start|>" in props["chat_template"]


def test_models_lists_the_one_model(server: str, smollm_gguf: Path) -> None:
    status, models = call("GET", server + "/models")
    assert status == 200
    assert models["object"] == "list"
    assert len(models["data"]) == 1
    model = models["data"][0]
    assert model["object"] == "model"
    assert model["owned_by"] == "llamacpp"
    assert model["id"] == str(smollm_gguf)  # the -m argument as given; --alias NAME would replace it
    assert model["meta"]["n_vocab"] == 49152
    assert model["meta"]["n_ctx"] == CTX


def test_tokenize_and_detokenize(root: str) -> None:
    assert call("POST", root + "/tokenize", {"content": PARIS_PROMPT}) == (200, {"tokens": PARIS_IDS})
    status, pieces = call("POST", root + "/tokenize", {"content": "Hello world!", "with_pieces": True})
    assert status == 200
    assert pieces == {"tokens": [{"id": 19556, "piece": "Hello"}, {"id": 905, "piece": " world"}, {"id": 17, "piece": "!"}]}
    # special tokens are parsed by default (parse_special) and no BOS is added (add_special defaults to false)
    assert call("POST", root + "/tokenize", {"content": "<|im_end|>"}) == (200, {"tokens": [2]})
    assert call("POST", root + "/detokenize", {"tokens": PARIS_IDS}) == (200, {"content": PARIS_PROMPT})


def test_apply_template(root: str) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    status, body = call("POST", root + "/apply-template", {"messages": messages})
    assert status == 200
    assert body == {
        "prompt": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    }


@pytest.mark.parametrize("field", ["logprobs", "n_probs"])
def test_streamed_completion_carries_top_logprobs(server: str, root: str, field: str) -> None:
    k, n_tokens = 5, 4
    events = stream(server + "/completions", {"prompt": PARIS_IDS, "max_tokens": n_tokens, "temperature": 0, field: k})
    *token_events, final = events
    assert len(token_events) == n_tokens
    ids = []
    for event in token_events:
        assert event["object"] == "text_completion"
        (choice,) = event["choices"]
        assert choice["index"] == 0 and choice["finish_reason"] is None
        (sampled,) = choice["logprobs"]["content"]  # exactly one entry per chunk: the sampled token
        assert set(sampled) == {"id", "token", "bytes", "logprob", "top_logprobs"}
        assert sampled["token"] == choice["text"]
        assert bytes(sampled["bytes"]) == sampled["token"].encode()
        top = sampled["top_logprobs"]
        assert len(top) == k
        assert all(set(entry) == {"id", "token", "bytes", "logprob"} for entry in top)
        logprobs = [entry["logprob"] for entry in top]
        assert logprobs == sorted(logprobs, reverse=True) and logprobs[0] <= 0.0
        assert top[0]["id"] == sampled["id"] and top[0]["logprob"] == sampled["logprob"]  # greedy
        ids.append(sampled["id"])
    assert token_events[0]["choices"][0]["text"] == " Paris" and ids[0] == 7042

    (choice,) = final["choices"]
    assert choice == {"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}
    assert final["usage"]["completion_tokens"] == n_tokens
    assert final["usage"]["prompt_tokens"] == len(PARIS_IDS)
    assert final["usage"]["total_tokens"] == n_tokens + len(PARIS_IDS)
    assert "cached_tokens" in final["usage"]["prompt_tokens_details"]
    assert final["timings"]["predicted_n"] == n_tokens
    assert final["timings"]["prompt_n"] + final["timings"]["cache_n"] == len(PARIS_IDS)

    text = "".join(event["choices"][0]["text"] for event in token_events)
    assert call("POST", root + "/detokenize", {"tokens": ids}) == (200, {"content": text})


def test_stream_sends_the_end_of_generation_token(server: str, root: str) -> None:
    _, templated = call("POST", root + "/apply-template", {"messages": [{"role": "user", "content": "Say hi."}]})
    _, tokens = call("POST", root + "/tokenize", {"content": templated["prompt"]})
    _, eos = call("POST", root + "/tokenize", {"content": "<|im_end|>"})
    events = stream(server + "/completions", {"prompt": tokens["tokens"], "max_tokens": 200, "temperature": 0, "logprobs": 2})
    *token_events, final = events
    assert final["choices"][0]["finish_reason"] == "stop"
    last = token_events[-1]["choices"][0]
    assert last["text"] == "" and last["finish_reason"] is None
    assert last["logprobs"]["content"][0]["id"] == eos["tokens"][0] == 2
    assert last["logprobs"]["content"][0]["token"] == ""  # special tokens are rendered as nothing
    assert final["usage"]["completion_tokens"] == len(token_events)  # the EOS token is counted


def test_tokens_ending_inside_a_utf8_character_are_not_streamed(server: str, root: str) -> None:
    """A token that leaves an incomplete UTF-8 character is held back with its id and logprobs.

    The token that completes the character is sent as one chunk whose
    ``text``/``token``/``bytes`` cover the whole character, but whose ``id`` and
    ``top_logprobs`` are that last token's only. The native /completion with
    ``return_tokens`` still lists every id in its non-streamed answer.
    """
    prompt = "Translate to Japanese: 'Tokyo is the capital of Japan.' Answer: 東京は日本"
    n_tokens = 12
    body = {"prompt": prompt, "max_tokens": n_tokens, "temperature": 0, "logprobs": 2}
    *token_events, final = stream(server + "/completions", body)
    assert final["usage"]["completion_tokens"] == n_tokens
    assert len(token_events) < n_tokens  # some tokens never got a chunk
    merged = 0
    for event in token_events:
        (sampled,) = event["choices"][0]["logprobs"]["content"]
        own = sampled["top_logprobs"][0]  # greedy: the sampled token's own entry
        assert own["id"] == sampled["id"]
        if own["bytes"] != sampled["bytes"]:
            merged += 1
            assert len(own["bytes"]) < len(sampled["bytes"])
            assert sampled["bytes"][-len(own["bytes"]):] == own["bytes"]
            assert bytes(sampled["bytes"]).decode() == event["choices"][0]["text"]
    assert merged > 0
    streamed_text = "".join(event["choices"][0]["text"] for event in token_events)

    status, native = call("POST", root + "/completion", {"prompt": prompt, "n_predict": n_tokens, "temperature": 0, "return_tokens": True})
    assert status == 200 and len(native["tokens"]) == n_tokens
    assert native["content"] == streamed_text
    assert call("POST", root + "/detokenize", {"tokens": native["tokens"]}) == (200, {"content": streamed_text})


def test_identical_request_hits_the_prompt_cache(server: str) -> None:
    body = {"prompt": "Zebras graze on the savanna while lions", "max_tokens": 3, "temperature": 0, "logprobs": 3}
    status, first = call("POST", server + "/completions", body)
    assert status == 200
    n_prompt = first["usage"]["prompt_tokens"]
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert first["timings"]["cache_n"] == 0 and first["timings"]["prompt_n"] == n_prompt
    status, second = call("POST", server + "/completions", body)
    assert status == 200
    # all but the last prompt token come from the cache (the last is re-decoded to get logits)
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == n_prompt - 1
    assert second["timings"]["cache_n"] == n_prompt - 1 and second["timings"]["prompt_n"] == 1
    assert second["choices"][0]["text"] == first["choices"][0]["text"]
    # non-streamed: logprobs.content lists every generated token
    assert len(second["choices"][0]["logprobs"]["content"]) == 3


def test_parallel_streams(server: str) -> None:
    results: list[list[dict]] = [[] for _ in range(N_PARALLEL)]

    def run(i: int) -> None:
        body = {"prompt": f"Item {i}:", "max_tokens": 3, "temperature": 0.8, "seed": i, "logprobs": 2}
        results[i] = stream(server + "/completions", body)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N_PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for events in results:
        assert len(events) == 4 and events[-1]["choices"][0]["finish_reason"] == "length"


def test_error_shapes(server: str, smollm_gguf: Path) -> None:
    status, body = call("POST", server + "/completions", {"prompt": PARIS_IDS, "max_tokens": 1, "n": N_PARALLEL + 1})
    assert status == 400
    assert body == {
        "error": {
            "code": 400,
            "message": f"Field 'n': Value must be between 1 <= value <= {N_PARALLEL}, but got {N_PARALLEL + 1}",
            "type": "invalid_request_error",
        }
    }

    status, body = call("POST", server + "/completions", {"prompt": PARIS_IDS * 900, "max_tokens": 1, "stream": True})
    assert status == 400  # refused before the stream starts: a plain JSON error, not SSE
    assert body["error"]["type"] == "exceed_context_size_error"
    assert body["error"]["n_prompt_tokens"] == 900 * len(PARIS_IDS) and body["error"]["n_ctx"] == CTX

    status, body = call("POST", server + "/completions", {"prompt": [10**8], "max_tokens": 1})
    assert (status, body["error"]["message"]) == (400, "Prompt contains invalid tokens")

    status, body = call("POST", server + "/completions", {"prompt": "Hi", "max_tokens": 1, "logprobs": "five"})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("Field 'logprobs':")

    # an unknown model name is not an error: a single-model server ignores "model"
    status, body = call("POST", server + "/completions", {"model": "no-such-model", "prompt": PARIS_IDS, "max_tokens": 1})
    assert status == 200 and body["model"] == str(smollm_gguf)


def test_logprobs_is_not_capped(server: str) -> None:
    """No "too many logprobs" error: K is clipped to the vocabulary (49152 entries, ~4.7 MB per token)."""
    status, body = call("POST", server + "/completions", {"prompt": PARIS_IDS, "max_tokens": 1, "logprobs": 100_000})
    assert status == 200
    top = body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert len(top) == 49152
