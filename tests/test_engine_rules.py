"""The EAGER-init and parallel rules, checked on the deterministic mock backend."""

from __future__ import annotations

import numpy as np
import pytest

import eager
from eager.backends.mock import EOG_ID, THINK_END_ID, MockBackend, default_logits
from eager.engine import Engine

VOCAB = 32


def run(prompts=("what is two plus two", "name a colour"), backend=None, **kw):
    backend = backend or MockBackend(VOCAB)
    kw.setdefault("max_tokens", 48)
    return backend, eager.generate(list(prompts), backend=backend, **kw)


def peaked(token: int, vocab: int = VOCAB, height: float = 30.0) -> np.ndarray:
    row = np.zeros(vocab, dtype=np.float32)
    row[token] = height
    return row


def flat_with_order(vocab: int = VOCAB) -> np.ndarray:
    """Near-uniform (entropy ~ ln K) with a strict order: 5 > 6 > 7 > ..."""
    return (-0.01 * np.arange(vocab)).astype(np.float32) + np.where(np.arange(vocab) >= 5, 0.0, -50.0).astype(np.float32)


def scripted(prompt_len: int, flat_at: set[int], end_at: int = 30):
    """Peaked rows (token 9) except at completion positions in flat_at; EOG at end_at."""

    def logits(history: tuple[int, ...]) -> np.ndarray:
        position = len(history) - prompt_len
        if position >= end_at:
            return peaked(EOG_ID)
        if position in flat_at:
            return flat_with_order()
        return peaked(9)

    return logits


def test_forks_happen_only_above_the_effective_threshold():
    _, results = run(theta=1.0, M=6, prompts=[f"prompt number {i}" for i in range(6)])
    forks = [f for r in results for f in r.forks]
    assert forks, "a low theta on the mock must fork"
    for fork in forks:
        assert fork.threshold >= 1.0
        assert fork.entropy > fork.threshold


def test_no_fork_when_theta_is_above_the_maximum_entropy():
    _, results = run(theta=np.log(20) + 0.01, M=8)
    assert all(not r.forks and len(r.sequences) == 1 for r in results)


def test_fixed_threshold_is_theta_when_dynamic_theta_is_off():
    _, results = run(theta=1.0, M=8, dynamic_theta=False, prompts=[f"p{i}" for i in range(4)])
    forks = [f for r in results for f in r.forks]
    assert forks and all(f.threshold == 1.0 for f in forks)


def test_dynamic_threshold_is_the_running_p99_of_earlier_steps():
    _, results = run(theta=2.0, M=8, prompts=[f"dynamic threshold {i}" for i in range(8)])
    checked = 0
    for result in (r for r in results if r.forks):
        first = result.forks[0]
        # before the first fork the tree is the root alone: its entropies are the history
        history = result.sequences[0].entropies[: first.position]
        expected = max(2.0, float(np.percentile(history, 99))) if history else 2.0
        assert first.threshold == pytest.approx(expected)
        checked += bool(history)
    assert checked  # at least one prompt forked after a history had built up


def test_effective_theta_never_drops_below_theta():
    from eager.core.config import BranchingConfig, SamplingConfig
    from eager.core.brancher import EagerInit
    from eager.core.tree import Tree, TreeRequest

    tree = Tree(TreeRequest("x", "eager-init", BranchingConfig(theta=2.0), SamplingConfig(), prompt_ids=(1,)), EagerInit())
    assert tree.effective_theta() == 2.0
    tree.record_entropies([0.1] * 300)
    assert tree.effective_theta() == 2.0
    tree.record_entropies([2.9] * 10)
    assert tree.effective_theta() == pytest.approx(float(np.percentile([0.1] * 300 + [2.9] * 10, 99)))


def test_parent_takes_top1_and_child_takes_top2_at_a_fork():
    backend = MockBackend(VOCAB)
    prompt = "which token comes next"
    _, results = run(prompts=[prompt], backend=backend, theta=0.5, M=8)
    prompt_ids = tuple(backend.tokenizer.encode_prompt(prompt, chat=True))
    result = results[0]
    assert result.forks
    for fork in result.forks:
        parent, child = result.sequences[fork.parent], result.sequences[fork.child]
        row = default_logits(VOCAB)(prompt_ids + tuple(parent.token_ids[: fork.position]))
        order = np.argsort(-row, kind="stable")
        assert child.token_ids[: fork.position] == parent.token_ids[: fork.position]
        if int(order[0]) != EOG_ID:
            assert parent.token_ids[fork.position] == int(order[0])
        if int(order[1]) != EOG_ID:
            assert child.token_ids[fork.position] == int(order[1])
        assert child.fork_at == fork.position and child.parent == fork.parent


@pytest.mark.parametrize("M", [1, 2, 3, 5, 8])
def test_never_more_than_M_sequences_and_the_cap_is_reached_at_theta_zero(M):
    _, results = run(theta=0.0, dynamic_theta=False, M=M, prompts=[f"cap {i}" for i in range(4)])
    for r in results:
        assert len(r.sequences) == M  # every step is "uncertain" at theta 0, so the cap binds
        assert len(r.forks) == M - 1


def test_the_window_W_stops_branching_after_W_steps_without_a_fork():
    prompt = "window"
    backend = MockBackend(VOCAB, logits_fn=scripted(len(prompt), flat_at={12}))
    _, narrow = run(prompts=[prompt], backend=backend, theta=1.0, window=5, M=4)
    assert narrow[0].forks == [] and len(narrow[0].sequences) == 1
    backend = MockBackend(VOCAB, logits_fn=scripted(len(prompt), flat_at={12}))
    _, wide = run(prompts=[prompt], backend=backend, theta=1.0, window=1000, M=4)
    assert [f.position for f in wide[0].forks] == [12]


def test_no_fork_after_the_end_of_thinking_marker():
    prompt = "think"

    def logits(history):
        position = len(history) - len(prompt)
        if position == 0:
            return peaked(THINK_END_ID)
        return peaked(EOG_ID) if position >= 20 else flat_with_order()

    _, with_marker = run(prompts=[prompt], backend=MockBackend(VOCAB, logits_fn=logits), theta=1.0, M=4, dynamic_theta=False)
    assert with_marker[0].forks == []
    assert with_marker[0].sequences[0].token_ids[0] == THINK_END_ID
    _, without = run(prompts=[prompt], backend=MockBackend(VOCAB, logits_fn=logits), theta=1.0, M=4, end_of_thinking="", dynamic_theta=False)
    assert len(without[0].forks) == 3


def test_same_seed_gives_the_same_tree_and_another_seed_another():
    def tree(seed):
        _, results = run(theta=1.0, M=6, seed=seed, prompts=[f"seeded {i}" for i in range(3)])
        return [([s.token_ids for s in r.sequences], [(f.parent, f.child, f.position) for f in r.forks]) for r in results]

    assert tree(7) == tree(7)
    assert tree(7) != tree(8)


def test_a_prompts_tree_does_not_depend_on_its_batch_neighbours():
    _, alone = run(theta=1.0, M=6, prompts=["neighbour test"])
    _, crowded = run(theta=1.0, M=6, prompts=["neighbour test", "another prompt", "and a third"])
    assert [s.token_ids for s in alone[0].sequences] == [s.token_ids for s in crowded[0].sequences]


def test_parallel_yields_M_sequences_sharing_one_prefill():
    backend = MockBackend(VOCAB)
    prompt = "parallel baseline"
    _, results = run(prompts=[prompt], backend=backend, method="parallel", M=5)
    result = results[0]
    assert len(result.sequences) == 5 and result.forks == []
    assert all(s.parent is None and s.fork_at is None for s in result.sequences)
    assert backend.forks == 4  # the prompt's cache is forked, not recomputed
    length_ends = sum(s.finish_reason == "length" for s in result.sequences)
    assert backend.tokens_decoded == len(prompt) + result.generated_tokens - length_ends
    assert result.generated_tokens == sum(len(s.token_ids) for s in result.sequences)
    assert len({tuple(s.token_ids) for s in result.sequences}) > 1


def test_a_fork_recomputes_no_prefix_token():
    backend = MockBackend(VOCAB)
    prompts = ["fork cost one", "fork cost two"]
    _, results = run(prompts=prompts, backend=backend, theta=0.5, M=6)
    assert sum(len(r.forks) for r in results) > 0
    prompt_tokens = sum(len(p) for p in prompts)
    generated = sum(r.generated_tokens for r in results)
    length_ends = sum(s.finish_reason == "length" for r in results for s in r.sequences)
    assert backend.tokens_decoded == prompt_tokens + generated - length_ends
    assert all(r.generated_tokens < r.sequence_tokens for r in results if r.forks)


def test_every_step_is_one_backend_call_holding_all_prompts_in_flight():
    backend = MockBackend(VOCAB)
    engine_steps = []
    _, results = run(prompts=[f"batch {i}" for i in range(4)], backend=backend, theta=1.0, M=4, on_step=engine_steps.append)
    assert backend.decode_calls == engine_steps[-1].steps
    assert max(backend.batch_sizes) > 4  # branches of several prompts decoded together


def test_prompts_enter_as_others_finish_when_slots_are_scarce():
    backend = MockBackend(VOCAB, max_sequences=8)
    _, results = run(prompts=[f"queue {i}" for i in range(6)], backend=backend, theta=1.0, M=4)
    assert len(results) == 6 and all(r.sequences for r in results)
    assert max(backend.batch_sizes) <= 8 + 1  # live branches plus one prefill chunk


def test_a_full_cache_preempts_and_never_cuts_a_sequence():
    # 4 branches x 60 tokens need 245 cells; the cache has 70: a lone tree parks branches
    backend = MockBackend(VOCAB, n_ctx=70, logits_fn=lambda h: flat_with_order())
    _, results = run(prompts=["cache"], backend=backend, method="parallel", M=4, max_tokens=60)
    assert [(len(s.token_ids), s.finish_reason) for s in results[0].sequences] == [(60, "length")] * 4
    assert results[0].preemptions > 0
    assert backend.cells_in_use == 0


def trees_of(results):
    return [([(s.token_ids, s.parent, s.fork_at, s.finish_reason) for s in r.sequences], r.forks) for r in results]


@pytest.mark.parametrize("method", ["parallel", "eager-init"])
@pytest.mark.parametrize("ctx", [90, 150, 400])
def test_preempted_trees_are_recomputed_to_the_trees_of_a_large_cache(method, ctx):
    prompts = ["what is two plus two", "name a colour", "count to five", "abc", "a longer prompt here"]
    kw = dict(prompts=prompts, method=method, M=8, max_tokens=60, theta=1.0, seed=3)
    _, big = run(backend=MockBackend(VOCAB, n_ctx=100_000), **kw)
    small_backend = MockBackend(VOCAB, n_ctx=ctx)
    _, small = run(backend=small_backend, **kw)
    assert trees_of(small) == trees_of(big)
    assert sum(r.preemptions for r in small) > 0 or ctx > 100
    assert small_backend.cells_in_use == 0 and small_backend.ledger_cells == 0


def test_a_lone_branching_tree_parks_branches_and_keeps_its_large_cache_tree():
    prompt = "abcde"

    def logits(history):  # a fork every 30 steps: 1, 2, 4, 8 branches
        position = len(history) - len(prompt)
        return flat_with_order() if position % 30 == 0 else peaked(9 + sum(history) % 7)

    kw = dict(prompts=[prompt], method="eager-init", M=8, max_tokens=100, theta=1.0, dynamic_theta=False, temperature=1.0, seed=1)
    _, big = run(backend=MockBackend(VOCAB, n_ctx=100_000, logits_fn=logits), **kw)
    backend = MockBackend(VOCAB, n_ctx=160, logits_fn=logits)
    _, small = run(backend=backend, **kw)
    assert len(big[0].sequences) == 8
    assert trees_of(small) == trees_of(big) and small[0].preemptions > 0
    assert backend.cells_in_use == 0


def test_the_cell_ledger_counts_shared_prefixes_once_like_the_cache():
    backend = MockBackend(VOCAB, n_ctx=100_000)
    counts = []

    def on_step(_stats):
        counts.append((backend.cells_in_use, backend.ledger_cells))

    eager.generate(["count cells", "and more cells"], backend=backend, M=6, theta=1.0, max_tokens=40, on_step=on_step)
    assert counts and all(cells == ledger for cells, ledger in counts)
    assert max(c for c, _ in counts) > 0 and backend.cells_in_use == 0


def test_a_tree_that_can_never_fit_is_refused_up_front():
    backend = MockBackend(VOCAB, n_ctx=50)
    with pytest.raises(eager.EagerError, match="exceeds the context of 50 tokens"):
        run(prompts=["refused"], backend=backend, max_tokens=60)


def test_max_tokens_ends_sequences_with_length():
    backend = MockBackend(VOCAB, logits_fn=lambda h: flat_with_order())
    _, results = run(prompts=["long"], backend=backend, method="parallel", M=2, max_tokens=7)
    assert [(len(s.token_ids), s.finish_reason) for s in results[0].sequences] == [(7, "length"), (7, "length")]


def test_end_of_generation_token_ends_with_stop_and_is_not_in_the_text():
    prompt = "stop"
    backend = MockBackend(VOCAB, logits_fn=scripted(len(prompt), flat_at=set(), end_at=5))
    _, results = run(prompts=[prompt], backend=backend, M=1)
    seq = results[0].sequences[0]
    assert seq.finish_reason == "stop" and seq.token_ids == [9] * 5 and EOG_ID not in seq.token_ids


def test_wall_shares_add_up_to_no_more_than_the_run():
    import time

    start = time.perf_counter()
    _, results = run(prompts=[f"time {i}" for i in range(3)], theta=1.0, M=4)
    elapsed = time.perf_counter() - start
    assert 0 < sum(r.wall_s for r in results) <= elapsed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"M": 0}, "M (max sequences per prompt) must be >= 1"),
        ({"theta": -0.1}, "theta must be >= 0"),
        ({"method": "beam"}, "unknown method 'beam'"),
        ({"max_tokens": 5000}, "exceeds the context"),
        ({"prompts": [" "]}, "prompt 0 is empty"),
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"top_p": 0}, "top_p must be in (0, 1]"),
        ({"entropy": "renyi"}, "unknown entropy mode"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, message):
    with pytest.raises(eager.EagerError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        run(**kwargs)


def test_engine_rejects_M_larger_than_the_backend_holds():
    with pytest.raises(eager.EagerError, match="exceeds the 4 sequences"):
        run(backend=MockBackend(VOCAB, max_sequences=4), M=5)


def test_engine_reports_progress_each_step():
    seen = []
    backend = MockBackend(VOCAB)
    eager.generate(["progress"], backend=backend, M=3, theta=1.0, on_step=seen.append)
    assert seen and seen[-1].prompts_done == 1 and seen[-1].live_branches == 0
    assert [s.steps for s in seen] == sorted(s.steps for s in seen)
    assert isinstance(Engine(backend).steps, int)


def test_a_tight_cache_never_cuts_a_prompt_because_of_its_neighbours():
    prompts = [f"tight cache {i}" for i in range(8)]
    _, alone = run(prompts=prompts[:1], backend=MockBackend(VOCAB, n_ctx=230), method="parallel", M=2)
    backend = MockBackend(VOCAB, n_ctx=230)
    _, crowded = run(prompts=prompts, backend=backend, method="parallel", M=2)
    assert [s.token_ids for s in crowded[0].sequences] == [s.token_ids for s in alone[0].sequences]
    assert max(backend.batch_sizes) > 2  # still more than one prompt in flight when they fit
    assert all(s.finish_reason == "stop" for r in crowded for s in r.sequences)


# -- the order of checks within one step, as the reference code does it --------------------


def flat_with_top(token: int, vocab: int = VOCAB) -> np.ndarray:
    """Near-uniform (high entropy) with ``token`` the most probable."""
    row = flat_with_order(vocab)
    row[token] = row.max() + 0.05
    return row


def test_a_branch_that_samples_end_of_generation_finishes_without_a_fork():
    # greedy: the sampled token is the top-1, here EOG, at a high-entropy step
    backend = MockBackend(VOCAB, logits_fn=lambda history: flat_with_top(EOG_ID))
    _, results = run(prompts=["x"], backend=backend, theta=0.5, M=4, temperature=0.0)
    assert results[0].forks == []
    assert [(s.token_ids, s.finish_reason) for s in results[0].sequences] == [([], "stop")]


def test_the_token_just_sampled_counts_for_the_end_of_thinking_check():
    prompt = "x"

    def logits(history):
        position = len(history) - len(prompt)
        return flat_with_top(THINK_END_ID) if position == 0 else (peaked(EOG_ID) if position >= 10 else flat_with_order())

    _, results = run(prompts=[prompt], backend=MockBackend(VOCAB, logits_fn=logits), theta=0.5, M=4, temperature=0.0, dynamic_theta=False)
    assert results[0].forks == []  # step 0 sampled "</think>": no fork there, and none after it
    assert results[0].sequences[0].token_ids[0] == THINK_END_ID


def test_a_forks_entropy_enters_the_history_for_the_parent_and_the_child():
    # every step after the first is equally uncertain: after one fork the history holds
    # [low, H, H], so its P99 is H and no later step (entropy H) clears theta_eff
    prompt = "x"

    def logits(history):
        position = len(history) - len(prompt)
        return peaked(9) if position == 0 else (peaked(EOG_ID) if position >= 20 else flat_with_order())

    _, results = run(prompts=[prompt], backend=MockBackend(VOCAB, logits_fn=logits), theta=1.0, M=4, end_of_thinking="")
    assert len(results[0].forks) == 1
    _, fixed = run(prompts=[prompt], backend=MockBackend(VOCAB, logits_fn=logits), theta=1.0, M=4, end_of_thinking="", dynamic_theta=False)
    assert len(fixed[0].forks) == 3


@pytest.mark.parametrize("method", ["parallel", "eager-init"])
def test_scarce_sequence_slots_queue_trees_and_keep_their_trees(method):
    prompts = [f"slot prompt {i}" for i in range(7)]
    kw = dict(prompts=prompts, method=method, M=8, max_tokens=40, theta=1.0, seed=5)
    _, big = run(backend=MockBackend(VOCAB, max_sequences=64), **kw)
    backend = MockBackend(VOCAB, max_sequences=9)
    _, small = run(backend=backend, **kw)
    assert trees_of(small) == trees_of(big)
    assert backend.free_sequences == 9 and backend.cells_in_use == 0
