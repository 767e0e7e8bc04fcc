"""The state of one prompt's generation: a tree of branches.

A :class:`Branch` owns everything about one sequence: its token ids (from the
end of the prompt on, inherited ones included), where it left its parent, the
entropy at each of its tokens, its random generator and how it finished.
A :class:`Tree` holds one prompt's branches plus the prompt-level state the
branching rules need (entropy history, steps since the last fork).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Sequence

import numpy as np

from eager.config import BranchingConfig, SamplingConfig

if TYPE_CHECKING:  # strategies import this module
    from eager.strategies import Strategy


class Status(Enum):
    WAITING = "waiting"  # the prompt is not in the cache yet
    PREFILLING = "prefilling"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True)
class Request:
    """One prompt to generate for, with its own rules.

    ``key`` names the request in the seed tree: each branch's generator is
    seeded with (seed, *key, branch index), so a prompt's tree does not depend
    on which other prompts share the batch.
    """

    prompt_ids: tuple[int, ...]
    strategy: Strategy
    branching: BranchingConfig
    sampling: SamplingConfig
    key: tuple[int, ...] = (0,)
    prompt: str = ""


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
    position: int  # completion position where the child left its parent
    entropy: float
    threshold: float  # theta_eff at that step


def branch_rng(seed: int, key: Sequence[int], index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key, index]))


@dataclass(eq=False)
class Tree:
    request: Request
    markers: list[list[int]]
    branches: list[Branch] = field(default_factory=list)
    forks: list[ForkEvent] = field(default_factory=list)
    status: Status = Status.WAITING
    prefilled: int = 0  # prompt tokens already in the cache
    root_seq: int | None = None
    steps_without_fork: int = 0
    branching_open: bool = True
    started_at: float = 0.0
    finished_at: float = 0.0
    compute_s: float = 0.0  # this prompt's share of step time, by tokens in each step
    _history: np.ndarray = field(default_factory=lambda: np.empty(256, dtype=np.float64))
    _n_history: int = 0

    # -- entropy history for the dynamic threshold ---------------------------------

    def record_entropies(self, values: Sequence[float]) -> None:
        need = self._n_history + len(values)
        if need > len(self._history):
            grown = np.empty(max(need, 2 * len(self._history)), dtype=np.float64)
            grown[: self._n_history] = self._history[: self._n_history]
            self._history = grown
        self._history[self._n_history : need] = values
        self._n_history = need

    def effective_theta(self) -> float:
        """theta_eff = max(theta, P99 of the entropies seen so far for this prompt).

        "So far" means before the current step, so the first step of a prompt
        compares against theta alone.
        """
        cfg = self.request.branching
        if not cfg.dynamic_theta or self._n_history == 0:
            return cfg.theta
        return max(cfg.theta, float(np.percentile(self._history[: self._n_history], 99)))

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

    def fork(self, parent: Branch, entropy: float, threshold: float, seq: int | None = None) -> Branch:
        """A child sharing every token the parent has so far; the event is recorded.

        The caller appends the parent's top-1 and the child's top-2 token next.
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
        self.forks.append(ForkEvent(parent.index, child.index, position, float(entropy), float(threshold)))
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
