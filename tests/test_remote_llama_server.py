"""The remote driver against llama.cpp's real ``llama-server`` with SmolLM2-135M.

The binary is the one ``scripts/build-llama-server.sh`` builds from the
llama.cpp in llama-cpp-python 0.3.36 (``tests/llama_server.py`` starts it on
127.0.0.1); the tests skip when it is not built. What they show: token-id
prompts and streamed ids (no re-tokenising at a fork), top-20 logprobs
through ``n_probs``, the model's chat template through ``/apply-template``,
the prompt cache serving forked prefixes, its slots as the concurrency cap,
and entropies equal to the local engine's.
"""

from __future__ import annotations

import json
import math
import urllib.request

import numpy as np
import pytest

from eager.core.config import BranchingConfig, SamplingConfig
from eager.core.tree import tree_requests
from eager.models import resolve_model
from eager.remote import connect, generate_remote, load_chat_template, run_remote
from eager.remote.http import run_sync
from llama_server import llama_server_path, running_llama_server
from local_entropy import local_topk_entropies

SLOTS = 4
QUESTION = "What is 7 * 8? Answer briefly."


@pytest.fixture(scope="module")
def llama_server():
    """llama-server on 127.0.0.1 with SmolLM2, 4 slots sharing 8192 cells, one thread (two spin-wait on a busy machine)."""
    if llama_server_path() is None:
        pytest.skip("llama-server is not built: run scripts/setup.sh --llama-server")
    with running_llama_server(resolve_model("smollm2-135m"), n_parallel=SLOTS, ctx=8192, extra_args=["--threads", "1"]) as url:
        yield url


def requests(*, method="eager-init", M=4, theta=1.0, max_tokens=40, seed=1, chat=True, prompts=(QUESTION,)):
    branching = BranchingConfig(max_sequences=M, theta=theta)
    return tree_requests(list(prompts), method=method, branching=branching, sampling=SamplingConfig(max_tokens=max_tokens, seed=seed), chat=chat)


def test_llama_server_is_probed_as_an_id_server_with_its_slots(llama_server):
    server = connect(llama_server)
    assert server.dialect.name == "llama.cpp llama-server"
    assert server.id_prompts and server.top_k == 20 and server.max_parallel == SLOTS


def test_llama_server_eager_init_forks_above_theta_on_token_ids(llama_server, smollm):
    (result,) = generate_remote(requests(M=4), url=llama_server, max_concurrency=8)
    assert len(result.forks) >= 1 and len(result.sequences) == len(result.forks) + 1 <= 4
    for fork in result.forks:
        assert fork.entropy > fork.threshold >= 1.0
        parent, child = result.sequences[fork.parent], result.sequences[fork.child]
        assert child.token_ids[: fork.position] == parent.token_ids[: fork.position]
    for seq in result.sequences:
        assert all(t >= 0 for t in seq.token_ids)  # the server's own ids, never mapped back from text
        assert smollm.tokenizer.decode(seq.token_ids) == seq.text
        assert seq.finish_reason in ("stop", "length") and 2 not in seq.token_ids  # <|im_end|> is not kept
        assert all(0 <= h <= math.log(20) + 1e-9 for h in seq.entropies)
    assert result.generated_tokens < result.sequence_tokens


def test_llama_server_applies_the_chat_template_as_the_gguf_says(llama_server, smollm):
    """/apply-template renders the GGUF's Jinja template exactly as eager's own rendering of it does."""
    rendered = load_chat_template(resolve_model("smollm2-135m")).render(QUESTION)
    body = json.dumps({"messages": [{"role": "user", "content": QUESTION}]}).encode()
    request = urllib.request.Request(llama_server.removesuffix("/v1") + "/apply-template", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert json.loads(answer.read())["prompt"] == rendered
    (result,) = generate_remote(requests(M=1, max_tokens=4), url=llama_server)
    assert result.prompt_tokens == len(smollm.tokenizer.encode(rendered, add_special=True, parse_special=True))
    (local,) = generate_remote(requests(M=1, max_tokens=4), url=llama_server, chat_template=resolve_model("smollm2-135m"))
    assert local.prompt_tokens == result.prompt_tokens


def test_llama_server_entropies_are_the_local_engines_top20_entropies(llama_server, smollm):
    (result,) = generate_remote(requests(M=1, max_tokens=16, chat=False, prompts=("The capital of France is",)), url=llama_server)
    (seq,) = result.sequences
    prompt = smollm.tokenizer.encode("The capital of France is", add_special=True, parse_special=False)
    local = local_topk_entropies(smollm, prompt, seq.token_ids)
    np.testing.assert_allclose(seq.entropies, local, atol=1e-3)  # one stream: the same batches as locally


def test_llama_server_prompt_cache_serves_the_forked_prefixes(llama_server):
    """A branch's request reuses what a slot holds: the prompt, and up to the fork where the slot served the parent."""
    (result,), stats = _run_with_stats(llama_server, requests(M=4, max_tokens=40, prompts=("Name three colours.",)))
    assert result.forks and stats.requests >= 1 + len(result.forks)
    assert stats.cached_prompt_tokens >= result.prompt_tokens


def test_llama_server_runs_no_more_streams_than_it_has_slots(llama_server):
    results, stats = _run_with_stats(llama_server, requests(M=4, max_tokens=24, prompts=(QUESTION, "Name a prime number.")))
    assert sum(len(r.sequences) for r in results) > SLOTS
    assert stats.peak_streams <= SLOTS


def test_cli_generate_applies_the_servers_chat_template(llama_server, capsys):
    from eager.cli import main

    code = main(["generate", "--model", f"openai:{llama_server}", "--prompt", QUESTION, "-M", "3", "--theta", "1.0", "--max-tokens", "24", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)["results"][0]
    assert 1 <= len(out["sequences"]) <= 3 and len(out["forks"]) == len(out["sequences"]) - 1
    assert all(f["entropy"] > f["threshold"] >= 1.0 for f in out["forks"])


def _run_with_stats(url, reqs):
    server = connect(url)
    return run_sync(lambda: run_remote(server, reqs, max_concurrency=16))
