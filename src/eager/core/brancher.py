"""The EAGER rules, in one place: at each step of a tree, which branches fork.

Both drivers call :func:`advance`: the local engine once per batched step
with every live branch of the tree, the remote driver once per streamed
token. Neither restates a rule; they differ only in how they supply a row
(:class:`Row`: the entropy, the token plain sampling gives, the top two) and
in the side effects of a fork or a finish (:class:`Driver`).

The rules, in the order the authors' reference code applies them within one
step (shared/EAGER.md):

* theta_eff = max(theta, P99 of the tree's earlier entropies) when dynamic;
* every branch first samples its token; one that sampled end-of-generation
  finishes ("stop") with no fork check;
* otherwise it forks when its entropy exceeds theta_eff, the tree has fewer
  than M sequences (branches are taken in order, so within a step only as
  many fork as the cap still allows), the window is open (fewer than W steps
  of the tree in a row without a fork) and it has not passed its
  end-of-thinking marker, the token just sampled included; the sampled token
  is then replaced: the parent goes on with the top-1 token, a new child
  with the top-2 token;
* otherwise it takes the sampled token; reaching max tokens finishes it ("length");
* after the step, every entropy of the step enters the tree's history, and a
  fork's entropy enters it once more for the child (the reference records it
  for the parent and for the child).

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

    def top_two_probs(self) -> tuple[float | None, float | None]:
        """The model's probabilities of those two tokens (None where unknown); asked only at a fork."""
        ...


class Driver(Protocol):
    """The side effects of the rules on a driver's resources."""

    def fork_sequence(self, parent: Branch) -> int | None:
        """A cache handle for a child sharing the parent's prefix (None where the driver has none)."""
        ...

    def is_end(self, token: int) -> bool:
        """Whether ``token`` ends generation."""
        ...

    def ends_thinking(self, tree: Tree, branch: Branch, token: int) -> bool:
        """Whether the branch's tokens followed by ``token`` end with the end-of-thinking marker."""
        ...

    def release(self, branch: Branch) -> None:
        """The branch finished: free what it holds."""
        ...


class Method(Protocol):
    name: str
    forks: bool  # whether its trees can fork (schedulers keep sequence slots for that)

    def initial_branches(self, tree: Tree) -> int: ...

    def may_fork(self, tree: Tree, branch: Branch, entropy: float, threshold: float, step: int) -> bool: ...

    def after_step(self, tree: Tree, entropies: Sequence[float]) -> None: ...


class ParallelSampling:
    """Full parallel sampling: M independent sequences per prompt.

    The prompt is prefilled once and its cache forked M-1 times, so the
    baseline pays for the prompt once, as EAGER does.
    """

    name = "parallel"
    forks = False

    def initial_branches(self, tree: Tree) -> int:
        return tree.request.branching.max_sequences

    def may_fork(self, tree: Tree, branch: Branch, entropy: float, threshold: float, step: int) -> bool:
        return False

    def after_step(self, tree: Tree, entropies: Sequence[float]) -> None:
        return None


class EagerInit:
    """EAGER-init: one sequence; fork where the next-token entropy is high."""

    name = "eager-init"
    forks = True

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
    """One step of a tree: every row's branch samples, then forks or keeps its token.

    All rows belong to ``tree`` and are at the same step (their branches'
    completion position).
    """
    if not rows:
        return
    method = tree.method
    entropies = [row.entropy for row in rows]
    threshold = threshold_for(tree, entropies)
    fork_entropies = []
    for row in rows:
        branch, h = row.branch, row.entropy
        token = row.sample()
        if driver.is_end(token):
            finish(branch, "stop", driver)
        elif method.may_fork(tree, branch, h, threshold, len(branch.token_ids)) and not _thinks_past(tree, branch, token, driver):
            first, second = row.top_two()
            alternatives = (first, second, *row.top_two_probs())
            child = tree.fork(branch, h, threshold, seq=driver.fork_sequence(branch), alternatives=alternatives)
            append(tree, branch, first, h, driver)
            append(tree, child, second, h, driver)
            fork_entropies.append(h)
        else:
            append(tree, branch, token, h, driver)
    method.after_step(tree, entropies + fork_entropies)


def _thinks_past(tree: Tree, branch: Branch, token: int, driver: Driver) -> bool:
    """The end-of-thinking check for a fork, with the token just sampled."""
    return bool(tree.request.branching.end_of_thinking) and driver.ends_thinking(tree, branch, token)


def append(tree: Tree, branch: Branch, token: int, h: float, driver: Driver) -> None:
    """Give a branch its next token, or finish it on end-of-generation or max tokens."""
    if driver.is_end(token):
        finish(branch, "stop", driver)
        return
    if tree.request.branching.end_of_thinking and not branch.past_end_of_thinking:
        branch.past_end_of_thinking = driver.ends_thinking(tree, branch, token)
    branch.token_ids.append(token)
    branch.entropies.append(float(h))
    if len(branch.token_ids) >= tree.request.sampling.max_tokens:
        finish(branch, "length", driver)
    else:
        branch.pending = token


def finish(branch: Branch, reason: str, driver: Driver) -> None:
    branch.finish_reason = reason
    branch.pending = None
    driver.release(branch)
