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
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from eager.backends.base import Backend, CacheFull, StepItem
from eager.core import brancher
from eager.core.entropy import batch_entropy
from eager.core.results import GenerationResult, StepStats, result_of
from eager.core.sampling import sample, top_two
from eager.core.tree import Branch, Status, Tree, TreeRequest
from eager.errors import EagerError


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
            as the backend's sequences and cache cells allow).
        on_step: called with :class:`StepStats` after every step.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_prompts_in_flight: int | None = None,
        on_step: Callable[[StepStats], None] | None = None,
    ) -> None:
        self.backend = backend
        self.max_prompts_in_flight = max_prompts_in_flight
        self.on_step = on_step
        self.driver = _EngineDriver(backend)
        self._marker_cache: dict[str, list[list[int]]] = {}
        self.steps = 0

    # -- public ----------------------------------------------------------------------

    def validate(self, request: TreeRequest) -> None:
        n_prompt = len(request.prompt_ids)
        if n_prompt == 0:
            raise EagerError("the prompt is empty")
        M = request.branching.max_sequences
        if M > self.backend.max_sequences:
            raise EagerError(f"M={M} exceeds the {self.backend.max_sequences} sequences the backend holds at once")
        need = n_prompt + request.sampling.max_tokens
        if need > self.backend.n_ctx:
            raise EagerError(
                f"max_tokens {request.sampling.max_tokens} + prompt {n_prompt} tokens = {need} "
                f"exceeds the context of {self.backend.n_ctx} tokens; lower max_tokens or raise ctx"
            )

    def run(self, requests: Iterable[TreeRequest]) -> Iterator[tuple[int, GenerationResult]]:
        """Generate for every request; yields (request position, result) as each finishes."""
        waiting: deque[tuple[int, Tree]] = deque()
        for position, request in enumerate(requests):
            self.validate(request)
            waiting.append((position, self._tree(request)))
        active: list[tuple[int, Tree]] = []
        counts = {"done": 0, "generated": 0}
        start = time.perf_counter()
        while waiting or active:
            self._admit(waiting, active)
            self.step(active)
            active, finished = _split_finished(active)
            for position, tree in finished:
                counts["done"] += 1
                counts["generated"] += tree.generated_tokens
                yield position, result_of(tree, self.backend.tokenizer.decode)
            self._report(active, counts, start)

    def step(self, active: list[tuple[int, Tree]]) -> None:
        """One batched forward pass for every tree in flight: schedule, run, postprocess."""
        items, rows = self._schedule(active)
        shares = _token_shares(items, active)
        started = time.perf_counter()
        try:
            logits = self.backend.step(items)
        except CacheFull:
            self._make_room(active)
        else:
            self._advance_prefills(items, active)
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

    def _admit(self, waiting: deque, active: list) -> None:
        """Move prompts into the cache while their worst case fits beside the others.

        Each prompt reserves M sequence slots, so a fork never waits for one,
        and prompt + M * max_tokens cells, so no prompt's branches are ever cut
        short because of its neighbours: a tree's result does not depend on
        what else is in flight. A prompt is always admitted when it would be
        alone; only then can the cache fill (see ``_make_room``).
        """
        backend = self.backend
        while waiting:
            if self.max_prompts_in_flight and len(active) >= self.max_prompts_in_flight:
                return
            tree = waiting[0][1]
            slots = sum(t.request.branching.max_sequences for _, t in active)
            cells = sum(_worst_case_cells(t.request) for _, t in active)
            fits_slots = slots + tree.request.branching.max_sequences <= backend.max_sequences
            fits_cells = cells + _worst_case_cells(tree.request) <= backend.n_ctx
            if active and not (fits_slots and fits_cells):
                return
            position, tree = waiting.popleft()
            tree.status = Status.PREFILLING
            tree.root_seq = backend.new_sequence()
            tree.started_at = time.perf_counter()
            active.append((position, tree))

    # -- one step --------------------------------------------------------------------

    def _schedule(self, active: list) -> tuple[list[StepItem], list[_Row]]:
        items: list[StepItem] = []
        rows: list[_Row] = []
        for _, tree in active:
            if tree.status is Status.RUNNING:
                for branch in tree.branches:
                    if branch.pending is not None:
                        items.append(StepItem(branch.seq, (branch.pending,)))
                        rows.append(_Row(tree, branch))
        room = self.backend.n_batch - len(items)
        for _, tree in active:
            if tree.status is not Status.PREFILLING or room <= 0:
                continue
            prompt = tree.request.prompt_ids
            chunk = prompt[tree.prefilled : tree.prefilled + room]
            last = tree.prefilled + len(chunk) == len(prompt)
            items.append(StepItem(tree.root_seq, chunk, want_logits=last))
            if last:
                rows.append(_Row(tree, None))
            room -= len(chunk)
        return items, rows

    def _advance_prefills(self, items: list[StepItem], active: list) -> None:
        """Move each prefilling prompt's cursor by the chunk it sent."""
        by_seq = {item.seq: len(item.tokens) for item in items}
        for _, tree in active:
            if tree.status is Status.PREFILLING and tree.root_seq in by_seq:
                tree.prefilled += by_seq[tree.root_seq]

    def _postprocess(self, rows: list[_Row], logits: np.ndarray) -> None:
        """Entropy of every row at once, then one brancher step per tree."""
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
        first = tree.new_branch([], [], seq=tree.root_seq)
        extra = [
            tree.new_branch([], [], seq=self.backend.fork(tree.root_seq))
            for _ in range(tree.method.initial_branches(tree) - 1)
        ]
        return [first, *extra]

    def _make_room(self, active: list) -> None:
        """The cache is full: end the longest live branch with "length".

        Nothing it generated is lost: it keeps its tokens and leaves the batch,
        which frees the cells it alone used; the step is then tried again.
        """
        candidates = [
            (len(t.request.prompt_ids) + len(b.token_ids), t, b)
            for _, t in active
            if t.status is Status.RUNNING
            for b in t.branches
            if b.pending is not None
        ]
        if not candidates:
            raise EagerError("the KV cache cannot hold the prompt; raise ctx or shorten the prompt")
        _, tree, victim = max(candidates, key=lambda c: c[0])
        brancher.finish(victim, "length", self.driver)
        _finish_if_done(tree)

    def _report(self, active: list, counts: dict[str, int], start: float) -> None:
        if not self.on_step:
            return
        self.on_step(
            StepStats(
                steps=self.steps,
                prompts_done=counts["done"],
                prompts_in_flight=len(active),
                live_branches=sum(len(t.live) for _, t in active),
                generated_tokens=counts["generated"] + sum(t.generated_tokens for _, t in active),
                elapsed_s=time.perf_counter() - start,
            )
        )


def _finish_if_done(tree: Tree) -> None:
    if tree.status is Status.RUNNING and not tree.live:
        tree.status = Status.FINISHED
        tree.finished_at = time.perf_counter()


def _split_finished(active: list) -> tuple[list, list]:
    still = [(p, t) for p, t in active if t.status is not Status.FINISHED]
    done = [(p, t) for p, t in active if t.status is Status.FINISHED]
    return still, done


def _token_shares(items: list[StepItem], active: list) -> list[tuple[Tree, float]]:
    """Each prompt's fraction of the tokens in a step.

    Prompts share every step, so per-prompt clocks would overlap; splitting
    each step's time by these fractions gives shares that add up to the
    run's wall-clock.
    """
    owner: dict[int, Tree] = {}
    for _, tree in active:
        if tree.status is Status.PREFILLING:
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


def _worst_case_cells(request: TreeRequest) -> int:
    """Cache cells a prompt's tree can use at most: its prompt and M full sequences."""
    return len(request.prompt_ids) + request.branching.max_sequences * request.sampling.max_tokens
