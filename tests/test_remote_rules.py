"""The EAGER rules, once, on both drivers of the brancher.

Every test here runs three times: on the local engine over ``MockBackend``,
and on the remote driver against a scripted server in each wire format
(vLLM's and llama-server's). The scripted server streams the top-K
log-probabilities of the same mock logits function the backend returns, at
the same histories, so both drivers face the same model. With greedy
sampling they must grow the very same tree; with sampling each driver's
trees are reproducible from the seed.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from eager.api import run_requests
from eager.backends.mock import EOG_ID, THINK_END_ID, MockBackend, MockTokenizer, default_logits
from eager.core.config import BranchingConfig, SamplingConfig
from eager.core.sampling import top_two
from eager.core.tree import tree_requests
from eager.remote import generate_remote
from scripted_server import LogitsScript, ScriptedServer, serving

VOCAB = 32
PROMPT = "what is two plus two"
PROMPT_IDS = tuple(MockTokenizer(VOCAB).encode_prompt(PROMPT, chat=False))
DRIVERS = ("engine", "vllm", "llama-server")


def grow_on(driver: str, prompts=(PROMPT,), *, logits_fn=None, method="eager-init", M=4, theta=1.0, window=1000,
            dynamic_theta=False, end_of_thinking="", max_tokens=24, temperature=0.0, seed=0, max_concurrency=8):  # fmt: skip
    """Grow one tree per prompt on ``driver`` ("engine" or a scripted server's flavour)."""
    branching = BranchingConfig(max_sequences=M, theta=theta, dynamic_theta=dynamic_theta, window=window, end_of_thinking=end_of_thinking)
    sampling = SamplingConfig(max_tokens=max_tokens, temperature=temperature, seed=seed)
    requests = tree_requests(list(prompts), method=method, branching=branching, sampling=sampling, chat=False)
    if driver == "engine":
        return run_requests(MockBackend(VOCAB, logits_fn=logits_fn), requests)
    server = ScriptedServer(LogitsScript(logits_fn, VOCAB), flavour=driver, total_slots=256)
    with serving(server) as url:
        return generate_remote(requests, url=url, max_concurrency=max_concurrency, backoff_s=0.01)


@pytest.fixture(params=DRIVERS)
def grow(request) -> Callable:
    return lambda *args, **kw: grow_on(request.param, *args, **kw)


def shape(result) -> tuple:
    """Everything that makes a tree, entropies rounded (the two paths compute them in another order)."""
    sequences = [(s.token_ids, s.parent, s.fork_at, s.finish_reason, np.round(s.entropies, 9).tolist()) for s in result.sequences]
    forks = [(f.parent, f.child, f.position, round(f.entropy, 9), round(f.threshold, 9)) for f in result.forks]
    return sequences, forks, result.generated_tokens


# -- scripted distributions ------------------------------------------------------------


def peaked(token: int) -> np.ndarray:
    row = np.zeros(VOCAB, dtype=np.float32)
    row[token] = 30.0
    return row


def flat(second: int = 6) -> np.ndarray:
    """Nearly uniform over tokens 5.. (entropy ~ ln 20 over the top 20): top-1 is 5, top-2 is ``second``."""
    row = np.where(np.arange(VOCAB) >= 5, -0.01 * np.arange(VOCAB), -50.0).astype(np.float32)
    row[second] = row[5] - 0.005
    return row


def plan(rows: Callable[[int, tuple[int, ...]], np.ndarray]):
    """A logits function of (completion position, completion so far)."""
    return lambda history: rows(len(history) - len(PROMPT_IDS), tuple(history[len(PROMPT_IDS) :]))


def forks_of(result) -> list[tuple[int, int, int]]:
    return [(f.parent, f.child, f.position) for f in result.forks]


# -- the rules -------------------------------------------------------------------------


def test_a_branch_forks_only_where_its_entropy_exceeds_theta_eff(grow):
    results = grow([f"prompt number {i}" for i in range(4)], M=6, theta=1.0, dynamic_theta=True, max_tokens=32)
    forks = [f for r in results for f in r.forks]
    assert forks, "theta = 1 forks on the mock"
    for result in results:
        for fork in result.forks:
            assert fork.entropy > fork.threshold >= 1.0
            parent, child = result.sequences[fork.parent], result.sequences[fork.child]
            assert parent.entropies[fork.position] == pytest.approx(fork.entropy)
            if len(child.token_ids) > fork.position:  # (a top-2 that ends generation gives the child no token)
                assert child.entropies[fork.position] == pytest.approx(fork.entropy)


def test_no_fork_when_theta_is_above_every_entropy(grow):
    results = grow([f"prompt number {i}" for i in range(3)], M=8, theta=float(np.log(20)) + 0.01, max_tokens=32)
    assert all(len(r.sequences) == 1 and not r.forks for r in results)


def test_the_parent_goes_on_with_top1_and_the_child_with_top2(grow):
    logits_fn = default_logits(VOCAB)
    (result,) = grow(M=8, theta=1.0, dynamic_theta=True, max_tokens=32, logits_fn=logits_fn)
    assert result.forks
    for fork in result.forks:
        parent, child = result.sequences[fork.parent], result.sequences[fork.child]
        first, second = top_two(logits_fn(PROMPT_IDS + tuple(parent.token_ids[: fork.position])))
        assert parent.token_ids[fork.position : fork.position + 1] in ([first], [])  # [] where top-1 ended it
        assert child.token_ids[fork.position : fork.position + 1] in ([second], [])
        assert child.token_ids[: fork.position] == parent.token_ids[: fork.position] and child.fork_at == fork.position


def test_a_tree_never_holds_more_than_M_sequences(grow):
    results = grow([f"prompt number {i}" for i in range(3)], M=3, theta=0.5, max_tokens=32)
    assert [len(r.sequences) for r in results] == [3, 3, 3]
    assert all(len(r.forks) == 2 for r in results)


@pytest.mark.parametrize(("window", "expected"), [(4, [(0, 1, 2), (1, 2, 5), (0, 3, 9)]), (3, [(0, 1, 2), (1, 2, 5)])])
def test_the_window_counts_steps_of_the_tree_across_live_branches(grow, window, expected):
    """#0 and #1 split at step 2; only #1 is uncertain at 5, only #0 at 9, everyone at 14.

    #0's fork at 9 is allowed only because #1 forked at step 5 (9 - 5 <= W = 4):
    the window counts steps of the whole tree, whichever branch streams first
    (the remote run has one connection, so #0 streams to its end before #1 starts).
    At 14 the window has closed: five steps without a fork.
    """

    def rows(position: int, completion: tuple[int, ...]) -> np.ndarray:
        lineage_1 = len(completion) > 2 and completion[2] == 6
        if position == 2 or position == 14 or (position == 5 and lineage_1) or (position == 9 and not lineage_1):
            return flat()
        return peaked(9)

    (result,) = grow(M=16, theta=1.0, window=window, max_tokens=16, logits_fn=plan(rows), max_concurrency=1)
    assert forks_of(result) == expected


def test_a_branch_forks_no_more_after_its_end_of_thinking_marker(grow):
    def rows(position: int, completion: tuple[int, ...]) -> np.ndarray:
        if position in (2, 7):
            return flat()
        return peaked(THINK_END_ID if position == 4 else 9)

    (thinking,) = grow(M=8, theta=1.0, end_of_thinking="</think>", max_tokens=12, logits_fn=plan(rows))
    assert [f.position for f in thinking.forks] == [2]
    (ignored,) = grow(M=8, theta=1.0, end_of_thinking="", max_tokens=12, logits_fn=plan(rows))
    assert [f.position for f in ignored.forks] == [2, 7, 7]


def test_max_tokens_finishes_every_branch_with_length(grow):
    (result,) = grow(M=4, theta=1.0, max_tokens=10, logits_fn=plan(lambda p, c: flat() if p == 2 else peaked(9)))
    assert len(result.sequences) == 2
    assert all(len(s.token_ids) == 10 and s.finish_reason == "length" for s in result.sequences)
    assert result.generated_tokens == 10 + (10 - 2)


def test_end_of_generation_finishes_a_branch_with_stop_and_is_not_kept(grow):
    def rows(position: int, completion: tuple[int, ...]) -> np.ndarray:
        if position == 2:
            return flat()
        return peaked(EOG_ID if position == 6 and completion[2] == 6 else 9)

    (result,) = grow(M=4, theta=1.0, max_tokens=12, logits_fn=plan(rows))
    root, child = result.sequences
    assert (child.finish_reason, len(child.token_ids)) == ("stop", 6) and EOG_ID not in child.token_ids
    assert (root.finish_reason, len(root.token_ids)) == ("length", 12)


def test_a_fork_whose_top2_ends_generation_gives_a_finished_child(grow):
    (result,) = grow(M=4, theta=1.0, max_tokens=12, logits_fn=plan(lambda p, c: flat(second=EOG_ID) if p == 3 else peaked(9)))
    root, child = result.sequences
    assert (child.parent, child.fork_at, len(child.token_ids), child.finish_reason) == (0, 3, 3, "stop")
    assert (len(root.token_ids), root.finish_reason) == (12, "length")


def test_parallel_sampling_grows_M_independent_sequences(grow):
    (result,) = grow(method="parallel", M=3, theta=0.0, max_tokens=16, temperature=0.8)
    assert len(result.sequences) == 3 and result.forks == []
    assert all(s.parent is None for s in result.sequences)
    assert result.generated_tokens == result.sequence_tokens


def test_the_same_seed_grows_the_same_tree(grow):
    prompts = [f"prompt number {i}" for i in range(3)]
    kw = dict(M=6, theta=1.0, dynamic_theta=True, max_tokens=32, temperature=0.7)
    first, again = grow(prompts, seed=3, **kw), grow(prompts, seed=3, **kw)
    assert [shape(r) for r in first] == [shape(r) for r in again]
    assert any(r.forks for r in first)


# -- the two drivers against each other ------------------------------------------------


@pytest.mark.parametrize("flavour", ["vllm", "llama-server"])
@pytest.mark.parametrize(
    "config",
    [
        dict(M=8, theta=1.0, dynamic_theta=True, max_concurrency=64),
        dict(M=8, theta=1.0, dynamic_theta=True, max_concurrency=1),
        dict(M=5, theta=0.8, dynamic_theta=False, window=3, max_concurrency=4),
        dict(M=4, theta=1.5, dynamic_theta=True, end_of_thinking="</think>", max_concurrency=16),
    ],
    ids=["dynamic-64-streams", "dynamic-1-stream", "window-3", "end-of-thinking"],
)
def test_the_remote_driver_grows_the_engines_tree(flavour, config):
    prompts = [f"prompt number {i}" for i in range(4)]
    engine = grow_on("engine", prompts, max_tokens=40, **{k: v for k, v in config.items() if k != "max_concurrency"})
    remote = grow_on(flavour, prompts, max_tokens=40, **config)
    assert sum(len(r.forks) for r in engine) >= 4
    assert [shape(r) for r in remote] == [shape(r) for r in engine]
