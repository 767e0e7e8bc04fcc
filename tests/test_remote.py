"""The remote driver's transport, protocol and failure modes (the rules: tests/test_remote_rules.py).

Two kinds of server, both on 127.0.0.1 and stopped by their fixtures:

* a scripted server (tests/scripted_server.py) whose tokens and entropies
  are known in advance: token-id prompts, streams kept or restarted at
  forks, retries, time-outs, cut streams, chat templates, bad input;
* llama-cpp-python's real server with the packaged SmolLM2-135M, for the
  whole path on a real model (text prompts, ids mapped back from text).
  llama.cpp's own llama-server: tests/test_remote_llama_server.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from eager.core.config import BranchingConfig, SamplingConfig
from eager.core.entropy import entropy_from_logprobs, topk_entropy
from eager.core.tree import tree_requests
from eager.errors import EagerError
from eager.remote import (
    NoChatTemplate,
    NoLogprobs,
    RemoteGenerationError,
    ServerError,
    ServerUnavailable,
    connect,
    generate_remote,
    load_chat_template,
    parse_choice,
    parse_remote_model,
)
from local_entropy import local_topk_entropies
from scripted_server import PROMPT_IDS, PositionScript, ScriptedServer, serving


@pytest.fixture
def fake_server():
    """Start scripted servers (PositionScript) on demand; each is stopped after the test."""
    stack = []

    def start(*, flavour: str = "vllm", end_at=None, eos_second_at=None, draw_second_when_high=False, **knobs) -> tuple[ScriptedServer, str]:
        script = PositionScript(end_at=end_at, eos_second_at=eos_second_at, draw_second_when_high=draw_second_when_high)
        server = ScriptedServer(script, flavour=flavour, **knobs)
        context = serving(server)
        stack.append(context)
        return server, context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def requests_for(prompts=("p",), *, M: int = 4, theta: float = 1.0, max_tokens: int = 12, method: str = "eager-init", seed: int = 0, chat: bool = False):
    branching = BranchingConfig(max_sequences=M, theta=theta, dynamic_theta=False, end_of_thinking="")
    sampling = SamplingConfig(max_tokens=max_tokens, seed=seed)
    return tree_requests(list(prompts), method=method, branching=branching, sampling=sampling, chat=chat)


def run_fake(url: str, *, prompts=("p",), M: int = 4, theta: float = 1.0, max_tokens: int = 12, method: str = "eager-init", chat: bool = False, **kw):
    kw.setdefault("max_concurrency", 1)
    kw.setdefault("backoff_s", 0.01)
    requests = requests_for(prompts, M=M, theta=theta, max_tokens=max_tokens, method=method, chat=chat)
    return generate_remote(requests, url=url, **kw)


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
    }  # fmt: skip
    (token,) = parse_choice(llama_server, 20, "u")
    assert token.id == 5 and [c.id for c in token.candidates] == [5, 2] and token.candidates[1].empty_bytes


def test_a_chunk_with_text_but_no_logprobs_is_an_error():
    with pytest.raises(NoLogprobs, match="logprobs"):
        parse_choice({"text": "hi", "logprobs": None}, 20, "http://x/v1")
    assert parse_choice({"text": "", "logprobs": None, "finish_reason": "stop"}, 20, "u") == []


def test_a_chat_template_from_a_gguf_renders_as_the_model_expects():
    from eager.models import resolve_model

    template = load_chat_template(resolve_model("smollm2-135m"))
    assert (template.bos_token, template.eos_token, template.adds_bos) == ("<|im_start|>", "<|im_end|>", False)
    assert template.render("What is 7 * 8?") == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 7 * 8?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_a_jinja_chat_template_file_renders_with_the_usual_variables(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(
        "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] | tojson }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    assert load_chat_template(path).render("héllo") == '[user]"héllo"[assistant]'
    path.write_text("{{ raise_exception('no system role') }}")
    with pytest.raises(EagerError, match="failed to render: no system role"):
        load_chat_template(path).render("x")
    with pytest.raises(EagerError, match="chat_template .* is not a file"):
        load_chat_template(tmp_path / "missing.jinja")


# -- requests: token ids, streams kept or restarted at forks -------------------------


def test_every_request_sends_the_prompt_and_branch_as_token_ids(fake_server):
    fake, url = fake_server()
    (result,) = run_fake(url, M=3)
    prefixes = {tuple(p) for p in fake.prompts}
    assert tuple(PROMPT_IDS) in prefixes
    for seq in result.sequences:
        if seq.fork_at is not None:  # the child's request: the prompt, the shared prefix, then its top-2
            assert tuple(PROMPT_IDS + seq.token_ids[: seq.fork_at + 1]) in prefixes
    # the server drew the top-1 at each fork, so the parent kept its stream: a fork costs one request
    assert len(fake.prompts) == 1 + len(result.forks)


def test_a_parent_whose_draw_was_not_its_top1_restarts_after_the_top1(fake_server):
    fake, url = fake_server(draw_second_when_high=True)
    (result,) = run_fake(url, M=2)
    root, child = result.sequences
    assert root.token_ids[3] == 1003 and child.token_ids[3] == 2003  # top-1 and top-2, whatever the server drew
    assert [len(p) - len(PROMPT_IDS) for p in fake.prompts] == [0, 4, 4]  # the root again after 1003, the child after 2003
    assert fake.prompts[1][-1] == 1003 and fake.prompts[2][-1] == 2003


def test_a_branch_far_ahead_of_a_sibling_waiting_for_a_slot_parks_and_resumes(fake_server):
    """With one connection, the first branch would stream to its end before its sibling starts;
    it closes its stream 64 tokens ahead instead, and goes on later from what it has."""
    fake, url = fake_server()
    (one_slot,) = run_fake(url, method="parallel", M=2, max_tokens=200, max_concurrency=1)
    # #0 streams 64 tokens and parks, #1 catches up and streams 64 beyond, parks; #0 resumes from 64, ...
    assert [len(p) - len(PROMPT_IDS) for p in fake.prompts] == [0, 0, 64, 128, 192]
    (two_slots,) = run_fake(url, method="parallel", M=2, max_tokens=200, max_concurrency=2)
    assert [s.token_ids for s in one_slot.sequences] == [s.token_ids for s in two_slots.sequences]
    assert all(len(s.token_ids) == 200 for s in one_slot.sequences)


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


def test_the_api_key_goes_out_as_bearer_auth(fake_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake, url = fake_server()
    run_fake(url, M=1)
    assert fake.authorization == {"Bearer sk-test"}


def test_it_runs_from_a_thread_and_from_inside_a_running_event_loop(fake_server):
    _, url = fake_server()
    out = []
    thread = threading.Thread(target=lambda: out.append(run_fake(url, M=2)))
    thread.start()
    thread.join(30)

    async def inside_a_loop():
        return run_fake(url, M=2)

    out.append(asyncio.run(inside_a_loop()))
    assert [len(r[0].sequences) for r in out] == [2, 2]


# -- chat templates over HTTP, or rendered here ----------------------------------------


def test_vllm_applies_the_chat_template_in_tokenize_with_messages(fake_server):
    fake, url = fake_server()
    run_fake(url, M=1, chat=True, max_tokens=2)
    assert fake.paths.get("/tokenize", 0) == 2  # one for the probe, one with the messages
    assert fake.prompts[0] == PROMPT_IDS


def test_llama_server_applies_the_chat_template_in_apply_template(fake_server):
    fake, url = fake_server(flavour="llama-server")
    run_fake(url, M=1, chat=True, max_tokens=2)
    assert fake.paths.get("/apply-template") == 1


def test_a_server_without_a_template_endpoint_asks_for_the_chat_template_option(fake_server, tmp_path):
    _, url = fake_server(owned_by="sglang")
    with pytest.raises(NoChatTemplate, match="SGLang server .* pass chat_template .*or chat=False"):
        run_fake(url, M=1, chat=True)
    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>")
    fake, url = fake_server(owned_by="sglang")
    run_fake(url, M=1, chat=True, max_tokens=2, chat_template=template)
    assert fake.prompts[0] == "<user>p<assistant>"  # SGLang streams text, so it gets the rendered text


# -- failures: retried, or a clear error, and nothing finished is lost --------------


@pytest.mark.parametrize("status", [503, 429])
def test_overloaded_and_failing_answers_are_retried_with_back_off(fake_server, status):
    fake, url = fake_server(fail_first=2, fail_status=status)
    (result,) = run_fake(url, M=2, retries=3)
    assert len(result.sequences) == 2 and fake.streams == 2 + 2


def test_a_4xx_is_a_clear_error_at_once(fake_server):
    fake, url = fake_server(fail_first=1, fail_status=400)
    with pytest.raises(RemoteGenerationError, match="answered 400: scripted failure 400") as info:
        run_fake(url, M=2, retries=3)
    assert isinstance(info.value.__cause__, ServerError) and fake.streams == 1


def test_a_cut_stream_resumes_where_it_stopped_without_losing_or_repeating_tokens(fake_server):
    _, url = fake_server()
    (clean,) = run_fake(url, M=3)
    fake, url = fake_server(cut_once_after=2)
    (cut,) = run_fake(url, M=3)
    assert [s.token_ids for s in cut.sequences] == [s.token_ids for s in clean.sequences]
    assert cut.generated_tokens == clean.generated_tokens
    assert [0, 2] == [len(p) - len(PROMPT_IDS) for p in fake.prompts[:2]]  # resumed with the 2 tokens it had


def test_a_silent_stream_is_cut_by_the_time_out_and_resumed(fake_server):
    _, url = fake_server()
    (clean,) = run_fake(url, M=3)
    fake, url = fake_server(stall_once_after=5, stall_s=3.0)
    start = time.perf_counter()
    (stalled,) = run_fake(url, M=3, timeout_s=0.3)
    assert time.perf_counter() - start < 2.5
    assert [s.token_ids for s in stalled.sequences] == [s.token_ids for s in clean.sequences]
    assert PROMPT_IDS + [1000, 1001, 1002, 1003, 1004] in fake.prompts  # the root resumed after its 5 tokens


def test_a_server_that_dies_mid_run_keeps_the_finished_results(fake_server):
    _, url = fake_server(die_after=1)  # the first prompt's one request works, then 503 for ever
    with pytest.raises(RemoteGenerationError, match="1 of 2 prompts finished") as info:
        run_fake(url, method="parallel", M=1, prompts=("first", "second"), retries=1)
    first, second = info.value.results
    assert first is not None and first.prompt == "first" and len(first.sequences[0].token_ids) == 12
    assert second is None
    assert isinstance(info.value.__cause__, ServerUnavailable)


def test_unreachable_server_fails_fast_with_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.perf_counter()
    with pytest.raises(ServerUnavailable, match=rf"cannot reach http://127.0.0.1:{port}/v1/models.*gave up after 2 retries"):
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
    _, url = fake_server(max_logprobs=4)
    server = connect(url, entropy_top_k=20)
    assert server.top_k == 4 and server.id_prompts
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
    local = local_topk_entropies(smollm, prompt, seq.token_ids)
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


def test_real_server_without_a_chat_template_endpoint_asks_for_the_chat_template_option(llama_server):
    requests = tree_requests(["hi"], method="eager-init", branching=BranchingConfig(), sampling=SamplingConfig(max_tokens=4), chat=True)
    with pytest.raises(NoChatTemplate, match="llama-cpp-python server .* cannot apply the model's chat template over HTTP; pass chat_template"):
        generate_remote(requests, url=llama_server)


def test_real_server_gets_the_gguf_chat_template_rendered_here(llama_server, smollm):
    from eager.models import resolve_model

    branching = BranchingConfig(max_sequences=2, theta=1.0)
    requests = tree_requests(["What is 7 * 8?"], method="eager-init", branching=branching, sampling=SamplingConfig(max_tokens=16, seed=1), chat=True)
    (result,) = generate_remote(requests, url=llama_server, chat_template=resolve_model("smollm2-135m"))
    expected = load_chat_template(resolve_model("smollm2-135m")).render("What is 7 * 8?")
    assert result.prompt_tokens == len(smollm.tokenizer.encode(expected, add_special=True, parse_special=True))
    assert all(s.text for s in result.sequences)


def test_real_server_is_probed_once_and_limits_itself_to_one_request(llama_server):
    server = connect(llama_server, "smollm2")
    assert server.dialect.name == "llama-cpp-python server"
    assert server.top_k == 20 and not server.id_prompts and server.max_parallel == 1


def test_cli_generate_runs_through_the_server(llama_server, capsys):
    from eager.cli import main

    code = main(["generate", "--model", f"openai:{llama_server}#smollm2", "--raw-prompt", "--prompt", SMOL_PROMPT,
                 "-M", "3", "--theta", "1.0", "--max-tokens", "24", "--seed", "1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)["results"][0]
    assert 1 <= len(out["sequences"]) <= 3
    assert len(out["forks"]) == len(out["sequences"]) - 1
    assert all(f["entropy"] > f["threshold"] >= 1.0 for f in out["forks"])
    assert out["generated_tokens"] <= sum(len(s["token_ids"]) for s in out["sequences"])


def test_cli_unreachable_server_is_one_clear_line(capsys):
    from eager.cli import main

    code = main(["generate", "--model", f"openai:http://127.0.0.1:{_free_port()}/v1", "--raw-prompt", "--prompt", "hi"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()  # (retries are logged as warnings before it)
    assert code == 2 and lines[-1].startswith("eager: error: ") and err.count("eager: error") == 1 and "Traceback" not in err


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


def test_leaving_the_executor_while_its_thread_closes_the_loop_is_not_an_error(monkeypatch):
    """The "end" event comes before the thread's clean-up closes the loop: the caller must not cancel on a closed loop."""
    from eager.eval.executors import RemoteExecutor

    release = threading.Event()

    def start(self, requests, events):
        loop = asyncio.new_event_loop()
        task = loop.create_task(asyncio.sleep(0))
        loop.run_until_complete(task)
        loop.close()  # as the thread's finally does, while the thread itself still runs
        thread = threading.Thread(target=release.wait, args=(0.2,), daemon=True)
        thread.start()
        events.put(("end", ["only"]))
        return loop, task, thread

    monkeypatch.setattr(RemoteExecutor, "_start", start)
    try:
        assert list(RemoteExecutor(server=None).run([])) == [(0, "only")]
    finally:
        release.set()
