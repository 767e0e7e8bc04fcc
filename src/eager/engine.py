"""The engine: continuous batching of branching generation over a backend.

The engine knows nothing about text, only token ids, and no EAGER rule: the
rules are the brancher's (:mod:`eager.core.brancher`). One step is three calls:

* ``_schedule``: every live branch of every prompt in flight contributes its
  pending token; prompts waiting for the cache contribute prefill chunks in
  whatever room the batch has left;
* ``backend.step``: ONE forward pass for all of it;
* ``_postprocess``: entropy for every logits row at once, then one
  :func:`~eager.core.brancher.advance` per tree; finished branches free their cache.

Prompts enter as others finish, as long as their sequences and cache cells fit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from eager.backends.base import Backend, CacheFull, StepItem
from eager.core import brancher
from eager.core.entropy import batch_entropy
from eager.core.results import GenerationResult, StepStats, result_of
from eager.core.sampling import probabilities, sample, top_two
from eager.core.tree import Branch, Status, Tree, TreeRequest
from eager.errors import EagerError
from eager.scheduler import Scheduler


@dataclass
class _Row:
    """A logits row of the current step, and whose it is (a brancher Row)."""

    tree: Tree
    branch: Branch | None  # None: the row ends the tree's prefill
    logits: np.ndarray | None = None
    entropy: float = 0.0

    def sample(self) -> int:
        return sample(self.logits, self.tree.request.sampling, self.branch.rng)

    def top_two(self) -> tuple[int, int]:
        return top_two(self.logits)

    def top_two_probs(self) -> tuple[float, float]:
        return probabilities(self.logits, self.top_two())


class _EngineDriver:
    """The brancher's side effects on the backend: KV forks and releases."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.eog_ids = backend.tokenizer.eog_ids

    def fork_sequence(self, parent: Branch) -> int | None:
        return self.backend.fork(parent.seq)

    def is_end(self, token: int) -> bool:
        return token in self.eog_ids

    def ends_thinking(self, tree: Tree, branch: Branch, token: int) -> bool:
        return tree.ends_thinking([*branch.token_ids[-tree.longest_marker :], token])

    def release(self, branch: Branch) -> None:
        if branch.seq is not None:
            self.backend.release(branch.seq)
            branch.seq = None


class Engine:
    """Runs tree requests to completion on one backend.

    Args:
        backend: anything that implements :class:`eager.backends.base.Backend`.
        max_prompts_in_flight: cap on prompts decoded together (None: as many
            as the backend's cache cells and sequences allow).
        on_step: called with :class:`StepStats` after every step.
        lookahead: steps of cache room kept per live branch when admitting a tree.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_prompts_in_flight: int | None = None,
        on_step: Callable[[StepStats], None] | None = None,
        lookahead: int = 8,
    ) -> None:
        self.backend = backend
        self.on_step = on_step
        self.driver = _EngineDriver(backend)
        self.scheduler = Scheduler(backend, lookahead=lookahead, max_prompts_in_flight=max_prompts_in_flight)
        self._marker_cache: dict[str, list[list[int]]] = {}
        self.steps = 0

    @property
    def preemptions(self) -> int:
        return self.scheduler.preemptions + self.scheduler.parked

    # -- public ----------------------------------------------------------------------

    def validate(self, request: TreeRequest) -> None:
        """Refuse up front what can never fit: one branch longer than the cache, or M beyond its sequences."""
        n_prompt = len(request.prompt_ids)
        if n_prompt == 0:
            raise EagerError("the prompt is empty")
        M = request.branching.max_sequences
        if M > self.backend.max_sequences:
            raise EagerError(
                f"M={M} exceeds the {self.backend.max_sequences} sequences the backend holds at once "
                f"(a llama.cpp context of ctx cells holds at most ctx sequences)"
            )
        need = n_prompt + request.sampling.max_tokens
        if need > self.backend.n_ctx:
            raise EagerError(
                f"max_tokens {request.sampling.max_tokens} + prompt {n_prompt} tokens = {need} "
                f"exceeds the context of {self.backend.n_ctx} tokens; lower max_tokens or raise ctx"
            )

    def add(self, position: int, request: TreeRequest) -> Tree:
        """Queue one tokenised request for admission at the next step (online use); returns its tree."""
        self.validate(request)
        tree = self._tree(request)
        self.scheduler.add(position, tree)
        return tree

    def cancel(self, position: int) -> bool:
        """Drop the tree queued under ``position``: its cache is released now; False if it is not here."""
        return self.scheduler.cancel(position)

    def end_branch(self, tree: Tree, branch: Branch, reason: str) -> bool:
        """Finish a live branch from outside (a stop string) between steps; its cache is released.

        Only a running tree with nothing left to catch up qualifies (False otherwise:
        try again after the next step), so no recompute refers to the branch.
        """
        slot = next((s for s in self.scheduler.active if s.tree is tree), None)
        if slot is None or slot.ops or slot.catching or tree.status is not Status.RUNNING or branch.finished:
            return False
        branch.finish_reason, branch.pending = reason, None
        self.driver.release(branch)
        _finish_if_done(tree)
        return True

    def run(self, requests: Iterable[TreeRequest]) -> Iterator[tuple[int, GenerationResult]]:
        """Generate for every request; yields (request position, result) as each finishes."""
        scheduler = self.scheduler
        for position, request in enumerate(requests):
            self.validate(request)
            scheduler.add(position, self._tree(request))
        counts = {"done": 0, "generated": 0}
        start = time.perf_counter()
        while scheduler.waiting or scheduler.active:
            scheduler.admit()
            self.step()
            for slot in scheduler.finished():
                counts["done"] += 1
                counts["generated"] += slot.tree.generated_tokens
                yield slot.position, result_of(slot.tree, self.backend.tokenizer.decode)
            self._report(counts, start)

    def step(self) -> None:
        """One batched forward pass for every tree in flight: schedule, run, postprocess."""
        items, rows, sent = self._schedule()
        shares = _token_shares(items, self.scheduler.active)
        started = time.perf_counter()
        try:
            logits = self.backend.step(items) if items else np.empty((0, 0), dtype=np.float32)
        except CacheFull:
            self._make_room(force=True)
            return
        for slot in self.scheduler.advance_catch_up(sent):
            rows += [_Row(slot.tree, None)]
        self._postprocess(rows, logits)
        self.steps += 1
        elapsed = time.perf_counter() - started
        for tree, share in shares:
            tree.compute_s += elapsed * share

    # -- admission -------------------------------------------------------------------

    def _tree(self, request: TreeRequest) -> Tree:
        return Tree(request, brancher.get_method(request.method), self._markers(request))

    def _markers(self, request: TreeRequest) -> list[list[int]]:
        text = request.branching.end_of_thinking
        if not text:
            return []
        if text not in self._marker_cache:
            self._marker_cache[text] = self.backend.tokenizer.encode_marker(text)
        return self._marker_cache[text]

    # -- one step --------------------------------------------------------------------

    def _decode_items(self) -> tuple[list[StepItem], list[_Row]]:
        items: list[StepItem] = []
        rows: list[_Row] = []
        for slot in self.scheduler.active:
            tree = slot.tree
            if tree.status is Status.RUNNING:
                for branch in tree.branches:
                    if branch.pending is not None and branch.seq is not None and branch.index not in slot.catching:
                        items.append(StepItem(branch.seq, (branch.pending,)))
                        rows.append(_Row(tree, branch))
        return items, rows

    def _schedule(self) -> tuple[list[StepItem], list[_Row], list]:
        """Every cached branch's pending token (preempting until they fit), then catch-up chunks in the room left."""
        scheduler, backend = self.scheduler, self.backend
        items, rows = self._decode_items()
        while scheduler.overfull(len(items)) and self._make_room():
            items, rows = self._decode_items()
        room = min(backend.n_batch - len(items), backend.n_ctx - backend.cells_in_use - len(items))
        catch_up, sent = scheduler.catch_up_items(room)
        return items + catch_up, rows, sent

    def _make_room(self, *, force: bool = False) -> bool:
        """Preempt the newest tree, or park a lone tree's newest branch; False when nothing can go."""
        scheduler = self.scheduler
        if scheduler.preempt_newest() or scheduler.abort_catch_up() or scheduler.park_newest_branch():
            return True
        if force:
            raise EagerError("the KV cache cannot hold the next step of a single branch; raise ctx")
        return False

    def _postprocess(self, rows: list[_Row], logits: np.ndarray) -> None:
        """Entropy of every row at once, then one brancher step per tree."""
        if not rows:
            return
        # rows of decodes come first, in item order; a finished prompt's row is its last item's
        entropies = self._entropies(rows, logits)
        by_tree: dict[int, list[_Row]] = {}
        for row, row_logits, h in zip(rows, logits, entropies):
            tree = row.tree
            if row.branch is None:
                starts = [_Row(tree, branch, row_logits, h) for branch in self._start_branches(tree)]
                by_tree.setdefault(id(tree), []).extend(starts)
            else:
                row.logits, row.entropy = row_logits, h
                by_tree.setdefault(id(tree), []).append(row)
        for tree_rows in by_tree.values():
            tree = tree_rows[0].tree
            brancher.advance(tree, tree_rows, self.driver)
            _finish_if_done(tree)

    def _entropies(self, rows: list[_Row], logits: np.ndarray) -> np.ndarray:
        """One vectorised entropy call per entropy mode present in the batch."""
        modes: dict[tuple[str, int], list[int]] = {}
        for i, row in enumerate(rows):
            cfg = row.tree.request.branching
            modes.setdefault((cfg.entropy, cfg.entropy_top_k), []).append(i)
        if len(modes) == 1:  # the usual case: no row subset to copy out
            ((mode, k),) = modes
            return batch_entropy(logits, mode, k)
        out = np.empty(len(rows), dtype=np.float64)
        for (mode, k), index in modes.items():
            out[index] = batch_entropy(logits[index], mode, k)
        return out

    def _start_branches(self, tree: Tree) -> list[Branch]:
        """The prompt is in the cache: open the method's initial branches.

        Extra initial branches (parallel sampling) fork the prompt's cache, so
        the prompt is computed once however many sequences start from it.
        """
        tree.status = Status.RUNNING
        tree.started_at = tree.started_at or time.perf_counter()
        root = tree.root_seq
        first = tree.new_branch([], [], seq=root)
        tree.root_seq = None  # the first branch owns the prompt's sequence from now on (not before: a failure keeps it released)
        extra = [tree.new_branch([], [], seq=self.backend.fork(root)) for _ in range(tree.method.initial_branches(tree) - 1)]
        return [first, *extra]

    def _report(self, counts: dict[str, int], start: float) -> None:
        if not self.on_step:
            return
        active = [slot.tree for slot in self.scheduler.active]
        self.on_step(
            StepStats(
                steps=self.steps,
                prompts_done=counts["done"],
                prompts_in_flight=len(active),
                live_branches=sum(len(t.live) for t in active),
                generated_tokens=counts["generated"] + sum(t.generated_tokens for t in active),
                elapsed_s=time.perf_counter() - start,
                preemptions=self.preemptions,
            )
        )


def _finish_if_done(tree: Tree) -> None:
    if tree.status is Status.RUNNING and not tree.live:
        tree.status = Status.FINISHED
        tree.finished_at = time.perf_counter()


def _token_shares(items: list[StepItem], active: list) -> list[tuple[Tree, float]]:
    """Each prompt's fraction of the tokens in a step.

    Prompts share every step, so per-prompt clocks would overlap; splitting
    each step's time by these fractions gives shares that add up to the
    run's wall-clock.
    """
    owner: dict[int, Tree] = {}
    for slot in active:
        tree = slot.tree
        if tree.root_seq is not None:
            owner[tree.root_seq] = tree
        for branch in tree.branches:
            if branch.seq is not None:
                owner[branch.seq] = tree
    counts: dict[int, list] = {}
    total = 0
    for item in items:
        tree = owner[item.seq]
        counts.setdefault(id(tree), [tree, 0])[1] += len(item.tokens)
        total += len(item.tokens)
    return [(tree, n / total) for tree, n in counts.values()] if total else []
