"""The real path: llama.cpp with SmolLM2-135M, forks in the KV cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

import eager
from eager.backends.base import StepItem
from eager.cli import main

PROMPT = "Tom has 3 apples and buys 5 more. How many apples does he have?"


def test_a_forked_sequence_continues_exactly_like_its_parent(smollm):
    ids = smollm.tokenizer.encode_prompt(PROMPT, chat=True)
    parent = smollm.new_sequence()
    row = smollm.step([StepItem(parent, ids)])[0]
    child = smollm.fork(parent)
    before = smollm.tokens_decoded
    token = int(np.argmax(row))
    rows = smollm.step([StepItem(parent, (token,)), StepItem(child, (token,))])
    assert smollm.tokens_decoded - before == 2  # the fork re-ran no prompt token
    np.testing.assert_allclose(rows[0], rows[1], atol=1e-4)
    smollm.release(parent)
    smollm.release(child)


def test_low_theta_forks_and_shares_the_prefix(smollm):
    before = smollm.tokens_decoded
    result = eager.generate(PROMPT, backend=smollm, method="eager-init", M=4, theta=0.5, max_tokens=32, seed=1)[0]
    assert result.forks
    assert 1 < len(result.sequences) <= 4
    assert result.generated_tokens < result.sequence_tokens
    length_ends = sum(s.finish_reason == "length" for s in result.sequences)
    # tokens sent to llama_decode: the prompt once, then each generated token once
    assert smollm.tokens_decoded - before == result.prompt_tokens + result.generated_tokens - length_ends
    for fork in result.forks:
        assert fork.entropy > fork.threshold >= 0.5
        child = result.sequences[fork.child]
        assert child.token_ids[: fork.position] == result.sequences[fork.parent].token_ids[: fork.position]


def test_parallel_counts_every_token_and_prefills_once(smollm):
    before = smollm.tokens_decoded
    result = eager.generate(PROMPT, backend=smollm, method="parallel", M=4, max_tokens=24, seed=3)[0]
    assert len(result.sequences) == 4
    assert result.generated_tokens == sum(len(s.token_ids) for s in result.sequences)
    length_ends = sum(s.finish_reason == "length" for s in result.sequences)
    assert smollm.tokens_decoded - before == result.prompt_tokens + result.generated_tokens - length_ends


def test_same_seed_same_output_on_the_real_model(smollm):
    def once(seed):
        results = eager.generate([PROMPT, "Name three colours."], backend=smollm, M=4, theta=1.0, max_tokens=24, seed=seed)
        return [[s.token_ids for s in r.sequences] for r in results]

    first = once(11)
    assert once(11) == first
    assert once(12) != first


def test_generation_stops_on_end_of_generation_token_ids(smollm):
    result = eager.generate("Say only the word yes.", backend=smollm, method="parallel", M=2, max_tokens=200, temperature=0)[0]
    stops = [s for s in result.sequences if s.finish_reason == "stop"]
    assert stops, "greedy SmolLM2 ends this answer well before 200 tokens"
    for seq in stops:
        assert not set(seq.token_ids) & smollm.tokenizer.eog_ids


def test_cli_generate_json_has_the_documented_fields(capsys):
    code = main(
        ["generate", "--model", "smollm2-135m", "--prompt", PROMPT, "-M", "3", "--theta", "0.5",
         "--max-tokens", "16", "--ctx", "1024", "--seed", "5", "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)["results"][0]
    assert set(out) >= {"sequences", "generated_tokens", "forks"}
    for seq in out["sequences"]:
        assert set(seq) >= {"text", "token_ids", "parent", "fork_at", "finish_reason"}
    for fork in out["forks"]:
        assert set(fork) >= {"parent", "child", "position", "entropy"}
    assert out["generated_tokens"] <= sum(len(s["token_ids"]) for s in out["sequences"])


def test_cli_human_view_shows_forks_with_their_entropy(capsys):
    code = main(["generate", "--model", "smollm2-135m", "--prompt", PROMPT, "-M", "3", "--theta", "0.5",
                 "--max-tokens", "16", "--ctx", "1024"])
    assert code == 0
    out = capsys.readouterr().out
    assert "#0 root" in out and "forked from #" in out and "H=" in out


def test_packaged_models_are_listed_with_their_state(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert rows["smollm2-135m"]["installed"] and rows["smollm2-135m"]["path"].endswith(".gguf")
    assert all({"name", "path", "size", "installed"} <= set(r) for r in rows.values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "gpt-9"], "unknown model 'gpt-9'; available: smollm2-135m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b"),
        (["--model", "/nonexistent/model.gguf"], "model file not found: /nonexistent/model.gguf"),
        (["-M", "0"], "M (max sequences per prompt) must be >= 1"),
        (["--theta", "-1"], "theta must be >= 0"),
        (["--prompt", ""], "the prompt is empty"),
        (["--max-tokens", "5000", "--ctx", "1024"], "max-tokens 5000 does not fit in the context of 1024 tokens"),
        (["--method", "beam"], "unknown method 'beam'"),
    ],
)
def test_bad_input_gives_one_clear_line_and_a_nonzero_exit(args, message, capsys):
    base = ["generate", "--model", "smollm2-135m", "--ctx", "1024"]
    prompt = [] if "--prompt" in args else ["--prompt", "hi"]
    code = main(base + prompt + args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("eager: error: ") and message in err
    assert err.count("\n") == 1


def test_prompt_plus_max_tokens_beyond_the_context_is_refused(capsys):
    code = main(["generate", "--model", "smollm2-135m", "--prompt", PROMPT, "--max-tokens", "1020", "--ctx", "1024"])
    assert code == 2 and "exceeds the context of 1024 tokens" in capsys.readouterr().err


def test_console_script_exits_nonzero_on_bad_input():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "eager.cli", "generate", "--model", "nope", "--prompt", "x"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("eager: error: unknown model 'nope'")


def test_a_small_kv_cache_preempts_and_no_sequence_is_cut(smollm):
    from eager.api import load_backend

    small = load_backend("smollm2-135m", ctx=256, max_sequences=16, threads=2)
    kw = dict(method="parallel", M=8, max_tokens=100, temperature=1.0, end_of_thinking="", seed=2)
    try:
        result = eager.generate(PROMPT, backend=small, **kw)[0]
        assert small.cells_in_use == 0
    finally:
        small.close()
    large = eager.generate(PROMPT, backend=smollm, **kw)[0]
    assert smollm.cells_in_use == 0
    assert result.preemptions > 0
    assert all(s.finish_reason == "stop" or len(s.token_ids) == 100 for s in result.sequences)
    assert result.prompt_tokens + result.generated_tokens > small.n_ctx  # more than the cache ever held
    # recomputed branches continue from their tokens with their own generators; llama.cpp's
    # logits move with the batch's shape (a recompute chunk changes it), so sampled trees
    # agree token for token until the cache first fills (46 + 8 x 26 cells), then within
    # that tolerance (the mock backend's trees are identical: tests/test_engine_rules.py)
    for a, b in zip(result.sequences, large.sequences):
        agree = next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y), min(len(a.token_ids), len(b.token_ids)))
        assert agree >= min(20, len(a.token_ids), len(b.token_ids))
