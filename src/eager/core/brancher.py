"""The EAGER rules, in one place: at each step of a tree, which branches fork.

Both drivers call :func:`advance`: the local engine once per batched step
with every live branch of the tree, the remote driver once per streamed
token. Neither restates a rule; they differ only in how they supply a row
(:class:`Row`: the entropy, the token plain sampling gives, the top two) and
in the side effects of a fork or a finish (:class:`Driver`).

The rules (shared/EAGER.md):

* theta_eff = max(theta, P99 of the tree's earlier entropies) when dynamic;
* a branch forks when its entropy exceeds theta_eff, the tree has fewer than
  M sequences, the window is open (fewer than W steps of the tree in a row
  without a fork) and the branch has not passed its end-of-thinking marker;
  the parent goes on with the top-1 token, a new child with the top-2 token;
* otherwise the branch takes the sampled token; an end-of-generation token
  finishes it ("stop"), reaching max tokens finishes it ("length").

A method is one small object: how many branches a tree starts with, whether
a branch may fork, and what the tree remembers after a step.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from eager.core.tree import Branch, Tree
from eager.errors import EagerError


class Row(Protocol):
    """What a driver knows about one branch's next token at one step."""

    branch: Branch
    entropy: float

    def sample(self) -> int:
        """The token plain sampling gives (drawn lazily: a fork draws none)."""
        ...

    def top_two(self) -> tuple[int, int]:
        """The most and second most probable tokens."""
        ...


class Driver(Protocol):
    """The side effects of the rules on a driver's resources."""

    def fork_sequence(self, parent: Branch) -> int | None:
        """A cache handle for a child sharing the parent's prefix (None where the driver has none)."""
        ...

    def is_end(self, token: int) -> bool:
        """Whether ``token`` ends generation."""
        ...

    def ends_thinking(self, tree: Tree, branch: Branch) -> bool:
        """Whether the branch's tokens so far end with the end-of-thinking marker."""
        ...

    def release(self, branch: Branch) -> None:
        """The branch finished: free what it holds."""
        ...


class Method(Protocol):
    name: str

    def initial_branches(self, tree: Tree) -> int: ...

    def may_fork(self, tree: Tree, branch: Branch, entropy: float, threshold: float, step: int) -> bool: ...

    def after_step(self, tree: Tree, entropies: Sequence[float]) -> None: ...


class ParallelSampling:
    """Full parallel sampling: M independent sequences per prompt.

    The prompt is prefilled once and its cache forked M-1 times, so the
    baseline pays for the prompt once, as EAGER does.
    """

    name = "parallel"

    def initial_branches(self, tree: Tree) -> int:
        return tree.request.branching.max_sequences

    def may_fork(self, tree: Tree, branch: Branch, entropy: float, threshold: float, step: int) -> bool:
        return False

    def after_step(self, tree: Tree, entropies: Sequence[float]) -> None:
        return None


class EagerInit:
    """EAGER-init: one sequence; fork where the next-token entropy is high."""

    name = "eager-init"

    def initial_branches(self, tree: Tree) -> int:
        return 1

    def may_fork(self, tree: Tree, branch: Branch, entropy: float, threshold: float, step: int) -> bool:
        return (
            entropy > threshold
            and tree.n_sequences < tree.request.branching.max_sequences
            and tree.window_open(step)
            and not branch.past_end_of_thinking
        )

    def after_step(self, tree: Tree, entropies: Sequence[float]) -> None:
        tree.record_entropies(entropies)


METHODS: dict[str, Method] = {m.name: m for m in (ParallelSampling(), EagerInit())}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise EagerError(f"unknown method {name!r}; available: {', '.join(METHODS)}") from None


def threshold_for(tree: Tree, entropies: Sequence[float]) -> float:
    """theta_eff for a step; the P99 is only needed when some entropy clears theta."""
    theta = tree.request.branching.theta
    return tree.effective_theta() if max(entropies) > theta else theta


def advance(tree: Tree, rows: Sequence[Row], driver: Driver) -> None:
    """One step of a tree: every row's branch forks or takes its sampled token.

    All rows belong to ``tree`` and are at the same step (their branches'
    completion position). Within a step, branches are taken in order, so
    only as many fork as the cap M still allows.
    """
    if not rows:
        return
    method = tree.method
    entropies = [row.entropy for row in rows]
    threshold = threshold_for(tree, entropies)
    for row in rows:
        branch, h = row.branch, row.entropy
        step = len(branch.token_ids)
        if method.may_fork(tree, branch, h, threshold, step):
            first, second = row.top_two()
            child = tree.fork(branch, h, threshold, seq=driver.fork_sequence(branch))
            append(tree, branch, first, h, driver)
            append(tree, child, second, h, driver)
        else:
            append(tree, branch, row.sample(), h, driver)
    method.after_step(tree, entropies)


def append(tree: Tree, branch: Branch, token: int, h: float, driver: Driver) -> None:
    """Give a branch its next token, or finish it on end-of-generation or max tokens."""
    if driver.is_end(token):
        finish(branch, "stop", driver)
        return
    branch.token_ids.append(token)
    branch.entropies.append(float(h))
    if tree.request.branching.end_of_thinking and not branch.past_end_of_thinking:
        branch.past_end_of_thinking = driver.ends_thinking(tree, branch)
    if len(branch.token_ids) >= tree.request.sampling.max_tokens:
        finish(branch, "length", driver)
    else:
        branch.pending = token


def finish(branch: Branch, reason: str, driver: Driver) -> None:
    branch.finish_reason = reason
    branch.pending = None
    driver.release(branch)
