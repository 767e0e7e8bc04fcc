"""Generation methods: each is one small strategy object on the same engine.

A strategy answers two questions for the engine: how many branches a prompt
starts with once its prefill is done, and whether a branch forks at this step.
Everything else (sampling, KV forks, finishing) is the engine's.
"""

from __future__ import annotations

from typing import Protocol

from eager.errors import EagerError
from eager.sequence import Branch, Tree


class Strategy(Protocol):
    name: str

    def initial_branches(self, tree: Tree) -> int: ...

    def should_fork(self, tree: Tree, branch: Branch, entropy: float, threshold: float) -> bool: ...

    def after_step(self, tree: Tree, entropies: list[float], forked: bool) -> None: ...


class ParallelSampling:
    """Full parallel sampling: M independent sequences per prompt.

    The prompt is prefilled once and its cache forked M-1 times, so the
    baseline pays for the prompt once, as EAGER does.
    """

    name = "parallel"

    def initial_branches(self, tree: Tree) -> int:
        return tree.request.branching.max_sequences

    def should_fork(self, tree: Tree, branch: Branch, entropy: float, threshold: float) -> bool:
        return False

    def after_step(self, tree: Tree, entropies: list[float], forked: bool) -> None:
        return None


class EagerInit:
    """EAGER-init: one sequence; fork where the next-token entropy is high.

    A branch forks when its entropy exceeds theta_eff while the prompt has
    fewer than M sequences, branching is still open (fewer than W steps in a
    row without a fork) and the branch has not passed its end-of-thinking marker.
    """

    name = "eager-init"

    def initial_branches(self, tree: Tree) -> int:
        return 1

    def should_fork(self, tree: Tree, branch: Branch, entropy: float, threshold: float) -> bool:
        return (
            entropy > threshold
            and tree.branching_open
            and tree.n_sequences < tree.request.branching.max_sequences
            and not branch.past_end_of_thinking
        )

    def after_step(self, tree: Tree, entropies: list[float], forked: bool) -> None:
        tree.record_entropies(entropies)
        tree.steps_without_fork = 0 if forked else tree.steps_without_fork + 1
        if tree.steps_without_fork >= tree.request.branching.window:
            tree.branching_open = False


STRATEGIES: dict[str, type] = {
    ParallelSampling.name: ParallelSampling,
    EagerInit.name: EagerInit,
}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise EagerError(f"unknown method {name!r}; available: {', '.join(STRATEGIES)}") from None
