"""One prompt's generation: a request for a tree, and the tree of branches it grows.

A :class:`TreeRequest` is the one name for a tree of work everywhere: the
engine, the remote driver, the evaluation's executors and Ray workers all take
it. It carries the prompt as text (and as token ids once tokenised at the
edge), the method's name, the rules and the sampling key.

A :class:`Branch` owns everything about one sequence: its token ids (from the
end of the prompt on, inherited ones included), where it left its parent, the
entropy at each of its tokens, its random generator and how it finished.
A :class:`Tree` holds one prompt's branches plus the prompt-level state the
branching rules need (entropy history for theta_eff, where forks happened).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Sequence

import numpy as np

from eager.core.config import BranchingConfig, SamplingConfig
from eager.core.quantile import RunningPercentile
from eager.errors import EagerError


class Status(Enum):
    WAITING = "waiting"  # the prompt is not in the cache yet
    PREFILLING = "prefilling"
    RECOMPUTING = "recomputing"  # preempted, back in the cache, rebuilding it from its tokens
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True)
class TreeRequest:
    """One tree to grow for one prompt, with its own rules.

    ``key`` names the tree in the seed tree: each branch's generator is
    seeded with (seed, *key, branch index), so a prompt's tree does not depend
    on which other prompts share the batch, the executor or the worker.
    ``prompt_ids`` is empty until the prompt is tokenised (text at the edge);
    ``chat`` says whether the model's chat template wraps the prompt then.
    """

    prompt: str
    method: str
    branching: BranchingConfig
    sampling: SamplingConfig
    key: tuple[int, ...] = (0,)
    chat: bool = True
    prompt_ids: tuple[int, ...] = ()


@dataclass(eq=False)
class Branch:
    index: int
    token_ids: list[int]
    entropies: list[float]
    rng: np.random.Generator
    parent: int | None = None
    fork_at: int | None = None
    seq: int | None = None  # the backend's handle while the branch is cached
    pending: int | None = None  # sampled, not yet decoded
    finish_reason: str | None = None
    past_end_of_thinking: bool = False

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def own_tokens(self) -> int:
        """Tokens this branch generated itself (not inherited from its parent)."""
        return len(self.token_ids) - (self.fork_at or 0)


@dataclass(frozen=True)
class ForkEvent:
    parent: int
    child: int
    position: int  # completion position (the tree's step) where the child left its parent
    entropy: float
    threshold: float  # theta_eff at that step
    # the two alternatives: the parent went on with the top-1 token, the child with the top-2
    parent_token: int | None = None
    child_token: int | None = None
    parent_prob: float | None = None  # the model's probability of each (softmax at T = 1)
    child_prob: float | None = None
    parent_text: str | None = None  # the tokens' texts, filled at the edge (results)
    child_text: str | None = None


def branch_rng(seed: int, key: Sequence[int], index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key, index]))


@dataclass(eq=False)
class Tree:
    request: TreeRequest
    method: Any  # the brancher's method object for request.method (eager.core.brancher)
    markers: list[list[int]] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)
    forks: list[ForkEvent] = field(default_factory=list)
    status: Status = Status.WAITING
    prefilled: int = 0  # prompt tokens already in the cache
    root_seq: int | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    compute_s: float = 0.0  # this prompt's share of step time, by tokens in each step
    preemptions: int = 0  # times its cache was released to make room
    history: RunningPercentile = field(default_factory=lambda: RunningPercentile(99.0))

    # -- entropy history for the dynamic threshold ---------------------------------

    def record_entropies(self, values: Sequence[float]) -> None:
        self.history.extend(values)

    def effective_theta(self) -> float:
        """theta_eff = max(theta, P99 of the entropies seen so far for this prompt).

        "So far" means before the current step, so the first step of a prompt
        compares against theta alone. The P99 is kept up to date as entropies
        arrive (:class:`~eager.core.quantile.RunningPercentile`), equal to
        ``np.percentile(history, 99)``.
        """
        cfg = self.request.branching
        if not cfg.dynamic_theta or self.history.n == 0:
            return cfg.theta
        return max(cfg.theta, self.history.value())

    # -- the window W, by the tree's steps ------------------------------------------

    def window_open(self, step: int) -> bool:
        """Whether a fork is allowed at ``step`` (a branch's completion position).

        Branching closes once W steps of the tree in a row passed without a
        fork: at step s it is open while s - (the last fork's step before s) <= W,
        with no fork counted as step -1. Forks at ``step`` itself do not count,
        so every branch of one step sees the same window.
        """
        last = max((f.position for f in self.forks if f.position < step), default=-1)
        return step - last <= self.request.branching.window

    # -- branches ------------------------------------------------------------------

    def new_branch(self, token_ids: list[int], entropies: list[float], **kw) -> Branch:
        req = self.request
        branch = Branch(
            index=len(self.branches),
            token_ids=token_ids,
            entropies=entropies,
            rng=branch_rng(req.sampling.seed, req.key, len(self.branches)),
            **kw,
        )
        self.branches.append(branch)
        return branch

    def fork(
        self, parent: Branch, entropy: float, threshold: float, seq: int | None = None,
        alternatives: tuple[int, int, float | None, float | None] | None = None,
    ) -> Branch:
        """A child sharing every token the parent has so far; the event is recorded.

        The caller appends the parent's top-1 and the child's top-2 token next;
        ``alternatives`` (top-1, top-2, their probabilities) are recorded with the event.
        """
        position = len(parent.token_ids)
        child = self.new_branch(
            list(parent.token_ids),
            list(parent.entropies),
            parent=parent.index,
            fork_at=position,
            seq=seq,
            past_end_of_thinking=parent.past_end_of_thinking,
        )
        extra = dict(zip(("parent_token", "child_token", "parent_prob", "child_prob"), alternatives or ()))
        self.forks.append(ForkEvent(parent.index, child.index, position, float(entropy), float(threshold), **extra))
        return child

    @property
    def live(self) -> list[Branch]:
        return [b for b in self.branches if not b.finished]

    @property
    def n_sequences(self) -> int:
        return len(self.branches)

    @property
    def generated_tokens(self) -> int:
        """Tokens the engine produced for this prompt, a shared prefix counted once."""
        return sum(b.own_tokens for b in self.branches)

    def ends_thinking(self, token_ids: list[int]) -> bool:
        return any(len(m) <= len(token_ids) and token_ids[-len(m) :] == m for m in self.markers)

    @property
    def longest_marker(self) -> int:
        return max((len(m) for m in self.markers), default=0)


def tokenized(request: TreeRequest, tokenizer: Any) -> TreeRequest:
    """The request with its prompt's token ids (text at the edge: tokenise as it enters).

    ``tokenizer`` is anything with ``encode_prompt(text, chat) -> list[int]``.
    """
    if request.prompt_ids:
        return request
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        raise EagerError("the prompt is empty")
    return replace(request, prompt_ids=tuple(tokenizer.encode_prompt(request.prompt, request.chat)))


def tree_requests(
    prompts: Sequence[str],
    *,
    method: str,
    branching: BranchingConfig,
    sampling: SamplingConfig,
    chat: bool = True,
    keys: Sequence[tuple[int, ...]] | None = None,
) -> list[TreeRequest]:
    """One request per prompt, keyed by its position unless ``keys`` are given."""
    requests = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise EagerError(f"prompt {i} is empty")
        if "\x00" in prompt:
            raise EagerError(f"prompt {i} contains a NUL character, which a chat template would cut the prompt at")
        key = tuple(keys[i]) if keys is not None else (i,)
        requests.append(TreeRequest(prompt, method, branching, sampling, key=key, chat=chat))
    return requests
