"""The remote backend: EAGER over an OpenAI-compatible completions server.

Two kinds of server, both on 127.0.0.1 and stopped by their fixtures:

* a scripted vLLM-like server (http.server in a thread) whose tokens and
  entropies are known in advance, for the exact rules, the id-prompt path,
  retries, cut streams and bad input;
* llama-cpp-python's real server with the packaged SmolLM2-135M, for the
  whole path on a real model (text prompts, ids mapped back from text).
"""

from __future__ import annotations

import json
from pathlib import Path
import math
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from eager.backends.base import StepItem
from eager.core.config import BranchingConfig, SamplingConfig
from eager.core.tree import tree_requests
from eager.core.entropy import entropy_from_logprobs, topk_entropy
from eager.errors import EagerError
from eager.remote import (
    NoLogprobs,
    RemoteGenerationError,
    connect,
    generate_remote,
    parse_choice,
    parse_remote_model,
)

# -- a scripted vLLM-like server -----------------------------------------------------

PROMPT_IDS = [101, 102, 103]
EOS = 7
HIGH = [0.24, 0.22, 0.20, 0.18, 0.16]  # H = 1.603 nats over the top 5
LOW = [0.96, 0.01, 0.01, 0.01, 0.01]  # H = 0.22 nats


def high_position(pos: int) -> bool:
    return pos % 6 == 3


def entropy_of(probs: list[float]) -> float:
    q = np.array(probs) / sum(probs)
    return float(-(q * np.log(q)).sum())


class FakeVllm:
    """Token ids in, token ids out; the token at completion position p is 1000+p.

    At p with p % 6 == 3 the top-5 are nearly uniform (H = 1.60), elsewhere
    peaked (H = 0.22); candidate i at p is (i+1)*1000 + p, so a child's token
    at its fork is 2000+p. Knobs for bad behaviour: no logprobs, a logprobs
    cap, 503s, cut streams, death after some requests, an end token.
    """

    def __init__(
        self,
        *,
        owned_by: str = "vllm",
        models: tuple[str, ...] = ("fake-model",),
        logprobs: bool = True,
        max_logprobs: int = 20,
        end_at: int | None = None,
        eos_second_at: int | None = None,
        fail_first: int = 0,
        cut_once_after: int | None = None,
        die_after: int | None = None,
    ) -> None:
        self.owned_by = owned_by
        self.models = models
        self.logprobs = logprobs
        self.max_logprobs = max_logprobs
        self.end_at = end_at
        self.eos_second_at = eos_second_at
        self.fail_first = fail_first
        self.cut_once_after = cut_once_after
        self.die_after = die_after
        self.streams = 0
        self.prompts: list[list[int]] = []
        self._lock = threading.Lock()

    # the vocabulary
    def candidates(self, pos: int) -> list[tuple[int, float]]:
        ids = [(i + 1) * 1000 + pos for i in range(5)]
        if self.eos_second_at == pos:
            ids[1] = EOS
        return list(zip(ids, HIGH if high_position(pos) else LOW))

    @staticmethod
    def text(token: int) -> str:
        return "<|im_end|>" if token == EOS else f"<{token}>"

    def step(self, pos: int, k: int) -> dict:
        cands = self.candidates(pos)
        token = EOS if self.end_at == pos else cands[0][0]
        top = {f"token_id:{t}": math.log(p) for t, p in cands[:k]}
        top.setdefault(f"token_id:{token}", math.log(0.01))
        choice = {"index": 0, "text": "" if token == EOS else self.text(token), "finish_reason": None}
        if self.logprobs:
            choice["logprobs"] = {"tokens": [f"token_id:{token}"], "token_logprobs": [top[f"token_id:{token}"]], "top_logprobs": [top], "text_offset": [0]}
        else:
            choice["logprobs"] = None
        return {"id": "cmpl-1", "object": "text_completion", "model": self.models[0], "choices": [choice]}


def _handler(fake: FakeVllm):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _json(self, status: int, body: dict) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                data = [{"id": m, "object": "model", "owned_by": fake.owned_by} for m in fake.models]
                self._json(200, {"object": "list", "data": data})
            else:
                self._json(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/tokenize" and fake.owned_by == "vllm":
                self._json(200, {"tokens": list(PROMPT_IDS), "count": 3, "max_model_len": 4096})
            elif self.path == "/detokenize" and fake.owned_by == "vllm":
                self._json(200, {"prompt": "".join(fake.text(t) for t in body["tokens"])})
            elif self.path == "/v1/completions":
                self._completion(body)
            else:
                self._json(404, {"detail": "Not Found"})

        def _completion(self, body: dict) -> None:
            k = body.get("logprobs") or 0
            if k > fake.max_logprobs:
                message = f"Requested sample logprobs of {k}, which is greater than max allowed: {fake.max_logprobs}"
                self._json(400, {"object": "error", "message": message, "type": "BadRequestError", "code": 400})
                return
            if not body.get("stream"):  # the probes
                self._json(200, fake.step(0, k))
                return
            with fake._lock:
                fake.streams += 1
                n = fake.streams
                fake.prompts.append(body["prompt"])
                cut = fake.cut_once_after
                fake.cut_once_after = None
            if n <= fake.fail_first or (fake.die_after is not None and n > fake.die_after):
                self._json(503, {"message": "overloaded"})
                return
            assert isinstance(body["prompt"], list), "vLLM gets token-id prompts"
            pos = len(body["prompt"]) - len(PROMPT_IDS)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for j in range(body["max_tokens"]):
                    if cut is not None and j == cut:
                        return  # the connection drops: no finish reason, no [DONE]
                    event = fake.step(pos + j, k)
                    last = fake.end_at == pos + j or j == body["max_tokens"] - 1
                    if last:
                        event["choices"][0]["finish_reason"] = "stop" if fake.end_at == pos + j else "length"
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                    if last:
                        break
                self.wfile.write(b"data: [DONE]\n\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client closed the stream at a fork

    return Handler


class _Serving:
    """An HTTP server on 127.0.0.1 in a thread, with a bounded request loop."""

    def __init__(self, handler, max_requests: int = 5000) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.timeout = 0.05
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(max_requests,), daemon=True)
        self._thread.start()

    def _loop(self, max_requests: int) -> None:
        for _ in range(max_requests * 200):  # handle_request returns after each request or 0.05 s
            if self._stop.is_set():
                return
            self.httpd.handle_request()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.httpd.server_close()


@pytest.fixture
def fake_server():
    servers: list[_Serving] = []

    def start(**knobs) -> tuple[FakeVllm, str]:
        fake = FakeVllm(**knobs)
        serving = _Serving(_handler(fake))
        servers.append(serving)
        return fake, serving.url

    yield start
    for serving in servers:
        serving.stop()


def run_fake(url: str, *, M: int = 4, theta: float = 1.0, max_tokens: int = 12, method: str = "eager-init", prompts=("p",), **kw):
    branching = BranchingConfig(
        max_sequences=M,
        theta=theta,
        dynamic_theta=kw.pop("dynamic_theta", False),
        window=kw.pop("window", 1000),
        end_of_thinking=kw.pop("end_of_thinking", ""),
    )
    sampling = SamplingConfig(max_tokens=max_tokens, seed=kw.pop("seed", 0))
    kw.setdefault("max_concurrency", 1)
    requests = tree_requests(list(prompts), method=method, branching=branching, sampling=sampling, chat=False)
    return generate_remote(requests, url=url, backoff_s=0.01, **kw)


def own_tokens(result) -> int:
    return sum(len(s.token_ids) - (s.fork_at or 0) for s in result.sequences)


# -- pure pieces -------------------------------------------------------------------


def test_openai_spec_parses_url_and_served_model():
    assert parse_remote_model("openai:http://127.0.0.1:8000/v1#qwen") == ("http://127.0.0.1:8000/v1", "qwen")
    assert parse_remote_model("openai:http://127.0.0.1:8000/v1/") == ("http://127.0.0.1:8000/v1", None)
    assert parse_remote_model("smollm2-135m") is None
    assert parse_remote_model("models/x.gguf") is None
    with pytest.raises(EagerError, match="openai:http://HOST:PORT/v1"):
        parse_remote_model("openai:localhost:8000")


def test_entropy_from_logprobs_is_the_top_k_entropy_of_the_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 200)) * 3
    logprobs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    top = -np.sort(-logprobs, axis=1)[:, :20]
    np.testing.assert_allclose(entropy_from_logprobs(top), topk_entropy(logits, 20), rtol=1e-6)  # topk_entropy reads float32 logits
    padded = np.concatenate([top[:, :5], np.full((3, 15), -np.inf)], axis=1)
    np.testing.assert_allclose(entropy_from_logprobs(padded), topk_entropy(logits, 5), rtol=1e-6)


def test_both_logprob_formats_parse_to_ids_and_sorted_candidates():
    openai = {"text": "<1>", "logprobs": {"tokens": ["token_id:1"], "top_logprobs": [{"token_id:2": -2.0, "token_id:1": -0.5, "token_id:3": -3.0}]}}
    (token,) = parse_choice(openai, 2, "u")
    assert (token.id, token.text) == (1, "<1>")
    assert [(c.id, c.logprob) for c in token.candidates] == [(1, -0.5), (2, -2.0)]
    text_only = {"text": " the", "logprobs": {"tokens": [" the"], "top_logprobs": [{" a": -1.0, " the": -0.7}]}}
    (token,) = parse_choice(text_only, 20, "u")
    assert (token.id, token.text, [c.text for c in token.candidates]) == (None, " the", [" the", " a"])
    llama_server = {
        "text": "x",
        "logprobs": {"content": [{"id": 5, "token": "x", "logprob": -0.1, "bytes": [120], "top_logprobs": [
            {"id": 5, "token": "x", "logprob": -0.1, "bytes": [120]},
            {"id": 2, "token": "", "logprob": -2.5, "bytes": []},
        ]}]},
    }
    (token,) = parse_choice(llama_server, 20, "u")
    assert token.id == 5 and [c.id for c in token.candidates] == [5, 2] and token.candidates[1].empty_bytes


def test_a_chunk_with_text_but_no_logprobs_is_an_error():
    with pytest.raises(NoLogprobs, match="logprobs"):
        parse_choice({"text": "hi", "logprobs": None}, 20, "http://x/v1")
    assert parse_choice({"text": "", "logprobs": None, "finish_reason": "stop"}, 20, "u") == []


# -- the rules, on the scripted server ----------------------------------------------


def test_forks_happen_only_where_entropy_exceeds_theta_and_stop_at_M(fake_server):
    fake, url = fake_server()
    (result,) = run_fake(url, M=4, theta=1.0, max_tokens=12)
    assert len(result.sequences) == 4 and len(result.forks) == 3
    for fork in result.forks:
        assert high_position(fork.position)
        assert fork.entropy == pytest.approx(entropy_of(HIGH)) and fork.entropy > fork.threshold == 1.0
        child = result.sequences[fork.child]
        parent = result.sequences[fork.parent]
        assert child.fork_at == fork.position and child.parent == fork.parent
        assert child.token_ids[fork.position] == 2000 + fork.position  # top-2 for the child
        assert parent.token_ids[fork.position] == 1000 + fork.position  # top-1 for the parent
        assert child.token_ids[: fork.position] == parent.token_ids[: fork.position]
    for seq in result.sequences:
        assert len(seq.token_ids) == 12 and seq.finish_reason == "length"
        assert len(seq.entropies) == 12
        assert seq.text == "".join(f"<{t}>" for t in seq.token_ids)
    # a shared prefix counted once
    assert result.generated_tokens == own_tokens(result) == 12 + sum(12 - f.position for f in result.forks)
    assert result.sequence_tokens == 48


def test_no_fork_below_theta(fake_server):
    _, url = fake_server()
    (result,) = run_fake(url, M=8, theta=1.7)  # H is 1.60 at most
    assert len(result.sequences) == 1 and result.forks == []
    assert result.generated_tokens == 12


def test_every_request_sends_the_prompt_and_branch_as_token_ids(fake_server):
    fake, url = fake_server()
    (result,) = run_fake(url, M=3)
    prefixes = {tuple(p) for p in fake.prompts}
    assert tuple(PROMPT_IDS) in prefixes
    for seq in result.sequences:
        if seq.fork_at is not None:  # the child's request starts with the prompt, the shared prefix, then top-2
            assert tuple(PROMPT_IDS + seq.token_ids[: seq.fork_at + 1]) in prefixes
    assert len(fake.prompts) == 1 + 2 * len(result.forks)  # a fork is two new requests


def test_the_window_counts_received_tokens_of_the_tree(fake_server):
    _, url = fake_server()
    (closed,) = run_fake(url, M=8, window=3)  # 3 tokens (0, 1, 2) without a fork: closed before p=3
    assert closed.forks == []
    _, url = fake_server()
    (one,) = run_fake(url, M=8, window=4)  # forks at 3, then 4 tokens without one close it before 9
    assert [f.position for f in one.forks] == [3]


def test_dynamic_threshold_blocks_forks_at_entropies_equal_to_the_p99(fake_server):
    _, url = fake_server()
    (result,) = run_fake(url, M=8, theta=1.0, dynamic_theta=True, max_tokens=20)
    first, second = result.forks  # with a fixed theta, 7 forks (see below)
    assert (first.position, first.threshold) == (3, 1.0)
    # before the fork at 9 the tree had received 9 tokens (0-3 of the root, 4-8 of #0): one high among them
    history = [entropy_of(HIGH) if high_position(p) else entropy_of(LOW) for p in [0, 1, 2, 3, 4, 5, 6, 7, 8]]
    assert second.position == 9 and second.threshold == pytest.approx(np.percentile(history, 99))
    assert 1.0 < second.threshold < second.entropy  # from then on P99 = 1.60 and equal entropies do not fork
    _, url = fake_server()
    (fixed,) = run_fake(url, M=8, theta=1.0, dynamic_theta=False, max_tokens=20)
    assert len(fixed.forks) == 7


def test_parallel_sampling_gives_M_independent_sequences(fake_server):
    fake, url = fake_server()
    (result,) = run_fake(url, method="parallel", M=3, max_concurrency=3)
    assert len(result.sequences) == 3 and result.forks == []
    assert all(s.parent is None and len(s.token_ids) == 12 for s in result.sequences)
    assert result.generated_tokens == result.sequence_tokens == 36
    assert len(fake.prompts) == 3


def test_end_of_thinking_marker_stops_forking(fake_server):
    _, url = fake_server()
    (result,) = run_fake(url, M=8, end_of_thinking="<1005>", max_tokens=20)
    assert [f.position for f in result.forks] == [3]  # both branches pass <1005> before p=9


def test_the_end_token_ends_a_sequence_and_is_not_kept(fake_server):
    _, url = fake_server(end_at=10)
    (result,) = run_fake(url, M=1, max_tokens=20)
    (seq,) = result.sequences
    assert seq.finish_reason == "stop" and len(seq.token_ids) == 10 and EOS not in seq.token_ids


def test_a_fork_whose_top_2_is_the_end_token_gives_a_finished_child(fake_server):
    _, url = fake_server(eos_second_at=3)
    (result,) = run_fake(url, M=2)
    parent, child = result.sequences
    assert child.finish_reason == "stop" and len(child.token_ids) == 3 and child.fork_at == 3
    assert len(parent.token_ids) == 12


def test_many_prompts_keep_their_order_and_their_own_trees(fake_server):
    _, url = fake_server()
    results = run_fake(url, M=2, prompts=("a", "b", "c"), max_concurrency=4)
    assert [r.prompt for r in results] == ["a", "b", "c"]
    assert all(len(r.sequences) == 2 and len(r.forks) == 1 for r in results)


def test_on_step_reports_progress(fake_server):
    _, url = fake_server()
    seen = []
    run_fake(url, M=2, on_step=seen.append)
    assert seen and seen[-1].prompts_done == 1 and seen[-1].generated_tokens == 12 + 9


# -- failures: retried, or a clear error, and nothing finished is lost --------------


def test_503s_are_retried_with_back_off(fake_server):
    fake, url = fake_server(fail_first=2)
    (result,) = run_fake(url, M=2, retries=3)
    assert len(result.sequences) == 2 and fake.streams == 2 + 3


def test_a_cut_stream_resumes_where_it_stopped_without_losing_or_repeating_tokens(fake_server):
    _, url = fake_server()
    (clean,) = run_fake(url, M=3)
    fake, url = fake_server(cut_once_after=2)
    (cut,) = run_fake(url, M=3)
    assert [s.token_ids for s in cut.sequences] == [s.token_ids for s in clean.sequences]
    assert cut.generated_tokens == clean.generated_tokens
    assert [3, 3 + 2] == [len(p) for p in fake.prompts[:2]]  # resumed with the 2 tokens it had


def test_a_server_that_dies_mid_run_keeps_the_finished_results(fake_server):
    _, url = fake_server(die_after=1)  # the first prompt's one request works, then 503 for ever
    with pytest.raises(RemoteGenerationError, match="1 of 2 prompts finished") as info:
        run_fake(url, method="parallel", M=1, prompts=("first", "second"), retries=1)
    first, second = info.value.results
    assert first is not None and first.prompt == "first" and len(first.sequences[0].token_ids) == 12
    assert second is None


def test_unreachable_server_fails_fast_with_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.perf_counter()
    with pytest.raises(EagerError, match=rf"cannot reach http://127.0.0.1:{port}/v1/models.*gave up after 2 retries"):
        run_fake(f"http://127.0.0.1:{port}/v1", retries=2)
    assert time.perf_counter() - start < 5


def test_a_server_without_logprobs_is_a_clear_error(fake_server):
    _, url = fake_server(logprobs=False)
    with pytest.raises(NoLogprobs, match="without top-K logprobs"):
        run_fake(url)


def test_an_unknown_served_model_is_a_clear_error(fake_server):
    _, url = fake_server(models=("qwen3-4b", "other"))
    with pytest.raises(EagerError, match="does not serve a model named 'nope'; it serves: qwen3-4b, other"):
        run_fake(url, served_model="nope")
    with pytest.raises(EagerError, match="name one with openai:"):
        run_fake(url)


def test_the_logprobs_limit_is_read_from_the_servers_refusal(fake_server):
    _, url = fake_server(max_logprobs=5)
    server = connect(url, entropy_top_k=20)
    assert server.top_k == 5 and server.id_prompts
    (result,) = run_fake(url, M=2, server=server)
    assert len(result.forks) == 1


def test_an_unknown_server_family_is_named_in_the_error(fake_server):
    _, url = fake_server(owned_by="mystery")
    with pytest.raises(EagerError, match="cannot tell which server"):
        run_fake(url)


def test_full_vocabulary_entropy_is_refused_for_remote_servers(fake_server):
    _, url = fake_server()
    branching = BranchingConfig(entropy="full")
    with pytest.raises(EagerError, match="top-K logprobs only"):
        generate_remote(tree_requests(["p"], method="eager-init", branching=branching, sampling=SamplingConfig(), chat=False), url=url)


# -- llama-cpp-python's real server with SmolLM2 ------------------------------------

SMOL_PROMPT = "<|im_start|>user\nWhat is 7 * 8?<|im_end|>\n<|im_start|>assistant\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    """llama-cpp-python's server on 127.0.0.1 with SmolLM2 (needs `pip install .[server]`)."""
    from eager.models import resolve_model

    model = resolve_model("smollm2-135m")
    port = _free_port()
    log = tempfile.TemporaryFile()
    cmd = [
        sys.executable, str(Path(__file__).parent / "serve_llama_cpp_python.py"), "--model", str(model), "--model_alias", "smollm2",
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
        "--interrupt_requests", "False", "--verbose", "False",
        "--flash_attn", "True",  # as the local engine's context: the same numerics, the same entropies
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"llama-cpp-python's server exited ({proc.returncode}); is `.[server]` installed?\n{log.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(url + "/models", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("llama-cpp-python's server did not start within 60 s")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_real(url: str, *, method: str = "eager-init", M: int = 4, theta: float = 1.0, max_tokens: int = 40, seed: int = 1, **kw):
    branching = BranchingConfig(max_sequences=M, theta=theta)
    sampling = SamplingConfig(max_tokens=max_tokens, seed=seed)
    requests = tree_requests([SMOL_PROMPT], method=method, branching=branching, sampling=sampling, chat=False)
    return generate_remote(requests, url=url, **kw)


def test_real_server_eager_init_forks_above_theta_caps_M_and_counts_tokens(llama_server):
    (result,) = run_real(llama_server, M=4, theta=1.0)
    assert 2 <= len(result.sequences) <= 4  # SmolLM2 is uncertain enough to fork at theta = 1
    assert len(result.forks) == len(result.sequences) - 1
    for fork in result.forks:
        assert fork.entropy > fork.threshold >= 1.0
        child = result.sequences[fork.child]
        assert child.entropies[fork.position] == pytest.approx(fork.entropy)
        assert child.token_ids[: fork.position] == result.sequences[fork.parent].token_ids[: fork.position]
    for seq in result.sequences:
        assert len(seq.token_ids) <= 40 and len(seq.entropies) == len(seq.token_ids)
        assert seq.finish_reason in ("stop", "length") and seq.text
        assert all(0 <= h <= math.log(20) + 1e-9 for h in seq.entropies)
    assert result.generated_tokens == own_tokens(result) < result.sequence_tokens


def test_real_server_ids_are_mapped_back_to_the_models_tokens(llama_server, smollm):
    (result,) = run_real(llama_server, M=2, max_tokens=24)
    ids = [t for s in result.sequences for t in s.token_ids]
    assert sum(t >= 0 for t in ids) >= 0.9 * len(ids)  # text-only server: nearly all pieces are one token
    for seq in result.sequences:
        if all(t >= 0 for t in seq.token_ids):
            assert smollm.tokenizer.decode(seq.token_ids) == seq.text


def test_real_server_entropy_is_the_local_engines_top20_entropy(llama_server, smollm):
    """H from the server's top-20 logprobs equals topk_entropy of the local logits, token by token."""
    (result,) = run_real(llama_server, M=1, max_tokens=16)  # one sequence, one request: no re-tokenising
    (seq,) = result.sequences
    prompt = smollm.tokenizer.encode(SMOL_PROMPT, add_special=True, parse_special=True)  # as the server reads text
    handle = smollm.new_sequence()
    try:
        local = [topk_entropy(smollm.step([StepItem(handle, prompt)]), 20)[0]]
        for token in seq.token_ids[:-1]:
            local.append(topk_entropy(smollm.step([StepItem(handle, (token,))]), 20)[0])
    finally:
        smollm.release(handle)
    np.testing.assert_allclose(seq.entropies, local, atol=1e-3)


def test_real_server_parallel_gives_M_sequences(llama_server):
    (result,) = run_real(llama_server, method="parallel", M=3, max_tokens=16)
    assert len(result.sequences) == 3 and result.forks == []
    assert result.generated_tokens == result.sequence_tokens == sum(len(s.token_ids) for s in result.sequences)


def test_real_server_same_seed_same_tree(llama_server):
    a, b = (run_real(llama_server, M=3, max_tokens=24, seed=7)[0] for _ in range(2))
    assert [s.token_ids for s in a.sequences] == [s.token_ids for s in b.sequences]
    assert [(f.parent, f.position) for f in a.forks] == [(f.parent, f.position) for f in b.forks]


def test_real_server_unknown_model_name_is_a_clear_error(llama_server):
    with pytest.raises(EagerError, match="does not serve a model named 'qwen'; it serves: smollm2"):
        run_real(llama_server, served_model="qwen")


def test_real_server_without_a_chat_template_endpoint_asks_for_a_raw_prompt(llama_server):
    with pytest.raises(EagerError, match="chat template over HTTP.*--raw-prompt"):
        generate_remote(tree_requests(["hi"], method="eager-init", branching=BranchingConfig(), sampling=SamplingConfig(max_tokens=4), chat=True), url=llama_server)


def test_real_server_is_probed_once_and_limits_itself_to_one_request(llama_server):
    server = connect(llama_server, "smollm2")
    assert server.dialect.name == "llama-cpp-python server"
    assert server.top_k == 20 and not server.id_prompts and server.max_parallel == 1


def test_cli_generate_runs_through_the_server(llama_server, capsys):
    from eager.cli import main

    code = main(["generate", "--model", f"openai:{llama_server}#smollm2", "--raw-prompt", "--prompt", SMOL_PROMPT,
                 "-M", "3", "--theta", "1.0", "--max-tokens", "24", "--seed", "1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert 1 <= len(out["sequences"]) <= 3
    assert len(out["forks"]) == len(out["sequences"]) - 1
    assert all(f["entropy"] > f["threshold"] >= 1.0 for f in out["forks"])
    assert out["generated_tokens"] <= sum(len(s["token_ids"]) for s in out["sequences"])


def test_cli_unreachable_server_is_one_clear_line(capsys):
    from eager.cli import main

    code = main(["generate", "--model", f"openai:http://127.0.0.1:{_free_port()}/v1", "--raw-prompt", "--prompt", "hi"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("eager: error: ") and err.count("\n") == 1


def test_cli_eval_runs_through_the_server_and_writes_every_file(llama_server, tmp_path, capsys):
    from eager.cli import main

    out = tmp_path / "run"
    code = main(["eval", "--model", f"openai:{llama_server}#smollm2", "--raw-prompt", "--dataset", "gsm8k",
                 "--limit", "2", "--methods", "parallel,eager-init,eager-adapt", "-M", "2", "--theta", "1.0",
                 "--max-tokens", "16", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    for method in ("parallel", "eager-init", "eager-adapt"):
        records = [json.loads(line) for line in (out / f"{method}.jsonl").read_text().splitlines()]
        assert len(records) == 2
        for record in records:
            assert 1 <= len(record["sequences"]) <= (2 if method != "eager-adapt" else 2 + 6)
            assert record["generated_tokens"] <= sum(s["n_tokens"] for s in record["sequences"])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"parallel", "eager-init", "eager-adapt"}
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
