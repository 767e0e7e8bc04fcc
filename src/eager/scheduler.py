"""The scheduler: which trees hold the KV cache, and how a tree gets (back) into it.

Admission is by cells in use, as vLLM's scheduler admits by free blocks: a
waiting tree enters when its prompt (or, for a preempted tree, the cells it
needs again) plus a margin for the next steps of every live branch fits in
the cache, and it holds sequence slots only for the branches it has (a fork
takes a slot when it happens).

When the next step would not fit (cells, or slots for this step's possible
forks), the most recently admitted tree is preempted: its sequences are
released and it waits again at the front of the queue, keeping every token,
entropy and random generator. Readmitted, it is recomputed from its tokens:
the prompt, then each branch's tokens with forks at the same positions, so
shared prefixes are shared again and each seeded branch continues exactly
where it stopped. A tree alone in the cache that does not fit parks its
newest live branches instead (they resume, recomputed, once others finish).

Nothing is ever cut: "length" means max tokens and nothing else.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from eager.backends.base import Backend, StepItem
from eager.core.tree import Branch, Status, Tree

log = logging.getLogger(__name__)


@dataclass
class Op:
    """One catch-up operation of a tree entering the cache.

    ``decode``: append ``tokens`` to the sequence of ``branch`` (``None``: the
    tree's root sequence), in chunks; ``logits`` asks for the last row (a fresh
    prompt's). ``fork``: ``branch`` gets a copy of ``source``'s sequence.
    ``release``: ``branch``'s sequence is no longer needed.
    """

    kind: str
    branch: int | None = None
    tokens: Sequence[int] = ()
    source: int | None = None
    logits: bool = False
    done: int = 0  # tokens of a decode already sent


@dataclass(eq=False)
class Slot:
    """A tree in the scheduler, with what it must still do to be fully in the cache."""

    position: int
    tree: Tree
    ops: deque[Op] = field(default_factory=deque)
    admitted: int = 0  # admission order: the newest is preempted first
    catching: set[int] = field(default_factory=set)  # parked branches being recomputed: not decoded yet


def _subtree_live(tree: Tree) -> set[int]:
    """Branches whose cells some live branch needs: the live ones and their ancestors."""
    needed: set[int] = set()
    for branch in tree.branches:
        if branch.finished:
            continue
        index: int | None = branch.index
        while index is not None and index not in needed:
            needed.add(index)
            index = tree.branches[index].parent
    return needed


def _cached_length(branch: Branch) -> int:
    """Tokens of a live branch already in the cache: all but the pending one."""
    return len(branch.token_ids) - (1 if branch.pending is not None else 0)


def recompute_ops(tree: Tree) -> list[Op]:
    """How to rebuild a preempted tree's cache from its tokens, forks at the same positions."""
    needed = _subtree_live(tree)
    roots = [b for b in tree.branches if b.parent is None and b.index in needed]
    ops = [Op("decode", roots[0].index, tuple(tree.request.prompt_ids))]
    ops += [Op("fork", r.index, source=roots[0].index) for r in roots[1:]]
    for root in roots:
        _branch_ops(tree, root, needed, ops)
    return ops


def _branch_ops(tree: Tree, branch: Branch, needed: set[int], ops: list[Op]) -> None:
    children = sorted((c for c in tree.branches if c.parent == branch.index and c.index in needed), key=lambda c: c.fork_at)
    position = branch.fork_at or 0
    for child in children:
        if child.fork_at > position:
            ops.append(Op("decode", branch.index, branch.token_ids[position : child.fork_at]))
            position = child.fork_at
        ops.append(Op("fork", child.index, source=branch.index))
    end = _cached_length(branch) if not branch.finished else position
    if end > position:
        ops.append(Op("decode", branch.index, branch.token_ids[position:end]))
    if branch.finished:
        ops.append(Op("release", branch.index))
    for child in children:
        _branch_ops(tree, child, needed, ops)


def cells_to_recompute(tree: Tree) -> int:
    """Cells a preempted tree takes once recomputed (its prompt, shared prefixes once)."""
    needed = _subtree_live(tree)
    total = len(tree.request.prompt_ids)
    for index in needed:
        branch = tree.branches[index]
        reach = _cached_length(branch) if not branch.finished else 0
        reach = max([reach, *(c.fork_at for c in tree.branches if c.parent == index and c.index in needed)])
        total += max(0, reach - (branch.fork_at or 0))
    return total


class Scheduler:
    """Admits, schedules catch-up work, and preempts; the engine runs the steps.

    Args:
        backend: the cache (``cells_in_use``, ``free_sequences``, ``n_ctx``).
        lookahead: steps of room kept per live branch when admitting (the margin).
        max_prompts_in_flight: cap on trees in the cache (None: as many as fit).
    """

    def __init__(self, backend: Backend, *, lookahead: int = 8, max_prompts_in_flight: int | None = None) -> None:
        self.backend = backend
        self.lookahead = lookahead
        self.max_prompts_in_flight = max_prompts_in_flight
        self.waiting: deque[Slot] = deque()
        self.active: list[Slot] = []
        self.preemptions = 0
        self.parked = 0
        self._admissions = 0

    # -- admission ---------------------------------------------------------------------

    def add(self, position: int, tree: Tree) -> None:
        self.waiting.append(Slot(position, tree))

    def admit(self) -> None:
        while self.waiting:
            if self.max_prompts_in_flight and len(self.active) >= self.max_prompts_in_flight:
                return
            slot = self.waiting[0]
            if self.active and not self._fits(slot):
                return
            self.waiting.popleft()
            self._enter(slot)

    def _live_branches(self) -> int:
        return sum(max(1, len(s.tree.live)) for s in self.active)

    def _fits(self, slot: Slot) -> bool:
        tree = slot.tree
        fresh = not tree.branches
        cells = len(tree.request.prompt_ids) if fresh else cells_to_recompute(tree)
        branches = tree.method.initial_branches(tree) if fresh else len(tree.live)
        slots = branches if fresh else len(_subtree_live(tree))
        margin = self.lookahead * (self._live_branches() + branches)
        backend = self.backend
        return backend.cells_in_use + cells + margin <= backend.n_ctx and self.free_slots() >= slots + self._fork_room()

    def _committed(self) -> int:
        """Slots that trees in the cache will take without asking: a prefilling tree's
        initial branches, a recomputing tree's forks and new sequences."""
        total = 0
        for slot in self.active:
            tree = slot.tree
            if tree.status is Status.PREFILLING:
                total += tree.method.initial_branches(tree) - 1
            elif tree.status is Status.RECOMPUTING:
                total += sum(1 for op in slot.ops if op.kind == "fork" or self._unbound(slot, op))
        return total

    def _unbound(self, slot: Slot, op: Op) -> bool:
        return op.kind == "decode" and op.branch is not None and slot.tree.branches[op.branch].seq is None

    def free_slots(self) -> int:
        """Sequence slots free and not committed to a tree already in the cache."""
        return self.backend.free_sequences - self._committed()

    def _enter(self, slot: Slot) -> None:
        tree = slot.tree
        self._admissions += 1
        slot.admitted = self._admissions
        if not tree.branches:
            tree.status = Status.PREFILLING
            tree.started_at = time.perf_counter()
            tree.root_seq = self.backend.new_sequence()
            slot.ops = deque([Op("decode", None, tuple(tree.request.prompt_ids), logits=True)])
        else:
            tree.status = Status.RECOMPUTING
            slot.ops = deque(recompute_ops(tree))
        self.active.append(slot)

    # -- catch-up work -----------------------------------------------------------------

    def _handle(self, slot: Slot, index: int | None) -> int:
        return slot.tree.root_seq if index is None else slot.tree.branches[index].seq

    def _run_instant_ops(self, slot: Slot) -> None:
        """Forks and releases at the front of a tree's catch-up queue happen between steps
        (a recompute's slots were committed when it was admitted)."""
        tree, backend = slot.tree, self.backend
        while slot.ops and slot.ops[0].kind != "decode":
            op = slot.ops[0]
            if op.kind == "fork":
                tree.branches[op.branch].seq = backend.fork(tree.branches[op.source].seq)
            else:
                branch = tree.branches[op.branch]
                backend.release(branch.seq)
                branch.seq = None
            slot.ops.popleft()

    def _bind_first_decode(self, slot: Slot, reserve: int, room: int) -> bool:
        """A recompute's first decode goes into a new sequence for its branch.

        A recompute's slot was committed at admission; a parked branch needs a
        slot free beyond ``reserve`` and its whole recompute must fit in
        ``room`` now: a half-rebuilt branch would hold cells its running
        siblings need.
        """
        op = slot.ops[0]
        branch = slot.tree.branches[op.branch] if op.branch is not None else None
        if branch is None or branch.seq is not None:
            return True
        if op.branch in slot.catching and (self.free_slots() <= reserve or len(op.tokens) > room):
            return False
        branch.seq = self.backend.new_sequence()
        return True

    def catch_up_items(self, room: int) -> tuple[list[StepItem], list[tuple[Slot, Op, int]]]:
        """Prefill and recompute chunks for this step, in the room the batch has left."""
        items: list[StepItem] = []
        sent: list[tuple[Slot, Op, int]] = []
        reserve = self._fork_room()
        for slot in self.active:
            self._run_instant_ops(slot)
            self._finish_catch_up(slot)
            if not slot.ops or slot.ops[0].kind != "decode" or room <= 0 or not self._bind_first_decode(slot, reserve, room):
                continue
            op = slot.ops[0]
            chunk = op.tokens[op.done : op.done + room]
            last = op.done + len(chunk) == len(op.tokens)
            items.append(StepItem(self._handle(slot, op.branch), chunk, want_logits=last and op.logits))
            sent.append((slot, op, len(chunk)))
            room -= len(chunk)
        return items, sent

    def advance_catch_up(self, sent: list[tuple[Slot, Op, int]]) -> list[Slot]:
        """Move each sent decode's cursor; returns the trees whose prompt just finished (they want a row)."""
        rows = []
        for slot, op, n in sent:
            op.done += n
            if op.done == len(op.tokens):
                slot.ops.popleft()
                slot.catching.discard(op.branch)
                if op.logits:
                    rows.append(slot)
                self._finish_catch_up(slot)
        return rows

    def _finish_catch_up(self, slot: Slot) -> None:
        if not slot.ops and slot.tree.status is Status.RECOMPUTING:
            slot.tree.status = Status.RUNNING

    # -- preemption --------------------------------------------------------------------

    def _fork_room(self) -> int:
        """Slots this step's forks may take: per branching tree, its rows up to its cap."""
        room = 0
        for slot in self.active:
            tree = slot.tree
            if not tree.method.forks:
                continue
            if tree.status is Status.RUNNING:
                rows = sum(1 for b in tree.branches if b.pending is not None and b.seq is not None)
            elif tree.status is Status.PREFILLING:
                rows = tree.method.initial_branches(tree)  # its first rows may come this step
            else:
                continue
            cap = tree.request.branching.max_sequences - max(tree.n_sequences, rows if not tree.branches else 0)
            room += max(0, min(rows, cap))
        return room

    def overfull(self, tokens: int) -> bool:
        backend = self.backend
        return backend.cells_in_use + tokens > backend.n_ctx or self.free_slots() < self._fork_room()

    def preempt_newest(self) -> bool:
        """Release the newest tree and queue it first; False when only one tree is in the cache."""
        if len(self.active) < 2:
            return False
        slot = max(self.active, key=lambda s: s.admitted)
        self.active.remove(slot)
        self._release_tree(slot.tree)
        slot.ops.clear()
        slot.catching.clear()
        self.waiting.appendleft(slot)
        self.preemptions += 1
        slot.tree.preemptions += 1
        log.debug("preempted tree %d (%d branches); %d preemptions so far", slot.position, len(slot.tree.branches), self.preemptions)
        return True

    def _release_tree(self, tree: Tree) -> None:
        for seq in {tree.root_seq, *(b.seq for b in tree.branches)} - {None}:
            self.backend.release(seq)
        tree.root_seq = None
        for branch in tree.branches:
            branch.seq = None
        tree.status = Status.WAITING

    def park_newest_branch(self) -> bool:
        """A lone tree that does not fit: release its newest cached live branch, to resume later."""
        if len(self.active) != 1:
            return False
        slot = self.active[0]
        cached = [b for b in slot.tree.branches if not b.finished and b.seq is not None and b.index not in slot.catching]
        if len(cached) < 2:
            return False
        branch = cached[-1]
        if any(c.parent == branch.index and c.seq is not None for c in slot.tree.branches):
            return False
        self.backend.release(branch.seq)
        branch.seq = None
        slot.ops.append(Op("decode", branch.index, tuple(slot.tree.request.prompt_ids) + tuple(branch.token_ids[:-1])))
        slot.catching.add(branch.index)
        self.parked += 1
        slot.tree.preemptions += 1
        return True

    def abort_catch_up(self) -> bool:
        """A lone tree whose parked branch is half rebuilt: drop that work so its running branches fit."""
        if len(self.active) != 1:
            return False
        slot = self.active[0]
        for op in slot.ops:
            branch = slot.tree.branches[op.branch] if op.branch is not None else None
            if op.kind == "decode" and branch is not None and op.branch in slot.catching and branch.seq is not None:
                self.backend.release(branch.seq)
                branch.seq = None
                op.done = 0
                return True
        return False

    def cancel(self, position: int) -> bool:
        """Remove the tree queued or running under ``position``, releasing its sequences now."""
        for slot in self.waiting:
            if slot.position == position:
                self.waiting.remove(slot)
                return True
        for slot in self.active:
            if slot.position == position:
                self.active.remove(slot)
                self._release_tree(slot.tree)
                slot.ops.clear()
                slot.catching.clear()
                return True
        return False

    def finished(self) -> list[Slot]:
        done = [s for s in self.active if s.tree.status is Status.FINISHED]
        self.active = [s for s in self.active if s.tree.status is not Status.FINISHED]
        return done
