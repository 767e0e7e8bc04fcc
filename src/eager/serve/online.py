"""The online engine: ONE engine loop in a thread, fed by every HTTP request at once.

Requests join the running batch as they arrive: each is a :class:`Job` whose
trees are queued in the engine's scheduler, which admits them by cells in
use and preempts as it does offline (continuous batching across clients).
The loop thread owns the engine and every tree; the asyncio side only sends
messages (a job to add, a job to cancel) through a thread-safe inbox and
receives events (:class:`Progress`, :class:`TreeDone`, :class:`JobDone`,
:class:`JobFailed`, :class:`Snapshot`) through the job's ``sink``, which the
server binds to an asyncio queue with ``call_soon_threadsafe``.

A cancelled job (its client went away, or timed out) is dropped from the
scheduler before the next step: its branches' cache is released then.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from eager.backends.base import Backend
from eager.core.results import GenerationResult, result_of
from eager.core.tree import Tree, TreeRequest
from eager.engine import Engine

log = logging.getLogger(__name__)

SNAPSHOT_EVERY_S = 0.1  # a playground's tree is redrawn at most this often


@dataclass(frozen=True)
class BranchDelta:
    """Tokens a branch gained since the last event (all of them, inherited ones too, the first time)."""

    index: int
    parent: int | None
    fork_at: int | None
    start: int  # position of new_tokens[0] in the branch's token ids
    new_tokens: list[int]


@dataclass(frozen=True)
class Progress:
    tree: int  # which of the job's trees (0, then 1, 2... when filling up to n)
    branches: list[BranchDelta]


@dataclass(frozen=True)
class TreeDone:
    tree: int
    result: GenerationResult


@dataclass(frozen=True)
class JobDone:
    results: list[GenerationResult]


@dataclass(frozen=True)
class JobFailed:
    message: str


@dataclass(frozen=True)
class Snapshot:
    tree: int
    result: dict[str, Any]  # GenerationResult.to_dict() of the growing tree


Plan = Callable[[list[GenerationResult]], "TreeRequest | None"]


@dataclass(eq=False)
class Job:
    """One HTTP request's work: trees grown one after another until ``plan`` says enough.

    ``plan(results so far)`` returns the next tokenised request, or None.
    ``sink`` receives the events; it must be thread-safe (it is called from the loop).
    """

    first: TreeRequest
    plan: Plan
    sink: Callable[[object], None]
    stream: bool = False
    snapshots: bool = False
    stops: tuple[str, ...] = ()
    results: list[GenerationResult] = field(default_factory=list)
    position: int | None = None
    tree: Tree | None = None
    sent: dict[int, int] = field(default_factory=dict)
    done: bool = False
    last_snapshot: float = 0.0

    def emit(self, event: object) -> None:
        try:
            self.sink(event)
        except RuntimeError:  # the request's event loop is gone (server shutting down)
            log.debug("dropped an event for a request whose loop is closed")


class OnlineEngine:
    """The engine loop thread and its inbox.

    Args:
        backend: the loaded model (or the mock); the loop is its only user.
        max_jobs: requests held at once (running or waiting); :meth:`submit` refuses more.
        observer: told of steps and finished trees (metrics); may be None.
    """

    def __init__(self, backend: Backend, *, max_jobs: int = 64, observer: Any = None, max_prompts_in_flight: int | None = None) -> None:
        self.backend = backend
        self.engine = Engine(backend, max_prompts_in_flight=max_prompts_in_flight)
        self.max_jobs = max_jobs
        self.observer = observer
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._jobs: dict[int, Job] = {}
        self._lock = threading.Lock()
        self._held = 0
        self._positions = itertools.count()
        self._thread = threading.Thread(target=self._run, name="eager-engine", daemon=True)
        self.failed: BaseException | None = None

    # -- the asyncio side ----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._inbox.put(("stop", None))
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def held(self) -> int:
        """Requests accepted and not yet finished."""
        return self._held

    @property
    def waiting(self) -> int:
        """Trees waiting for the cache."""
        return len(self.engine.scheduler.waiting)

    def submit(self, job: Job) -> bool:
        """Queue a job for the next step; False when ``max_jobs`` are held already."""
        with self._lock:
            if self._held >= self.max_jobs:
                return False
            self._held += 1
        self._inbox.put(("add", job))
        return True

    def cancel(self, job: Job) -> None:
        """Drop a job before the next step (its cache is released then); no-op once it is done."""
        self._inbox.put(("cancel", job))

    # -- the loop thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug here must show in /health, not hang every request
            self.failed = exc
            log.exception("the engine loop stopped")
            for job in list(self._jobs.values()):
                self._end(job, JobFailed(f"the engine loop stopped: {exc}"))

    def _loop(self) -> None:
        scheduler = self.engine.scheduler
        while True:
            busy = bool(scheduler.waiting or scheduler.active)
            if not self._drain(block=not busy):
                break
            if scheduler.waiting or scheduler.active:
                self._step()
        for job in list(self._jobs.values()):
            self._end(job, JobFailed("the server is shutting down"))

    def _drain(self, *, block: bool) -> bool:
        """Handle every message in the inbox (waiting for one when idle); False on stop."""
        messages = []
        try:
            messages.append(self._inbox.get() if block else self._inbox.get_nowait())
            while True:
                messages.append(self._inbox.get_nowait())
        except queue.Empty:
            pass
        for kind, job in messages:
            if kind == "stop":
                return False
            if kind == "add":
                self._start_tree(job, job.first)
            elif not job.done:
                self._end(job, JobFailed("cancelled"))
        return True

    def _start_tree(self, job: Job, request: TreeRequest) -> None:
        job.position, job.sent = next(self._positions), {}
        try:
            job.tree = self.engine.add(job.position, request)
        except Exception as exc:  # validated at the edge already; a failure here ends this job only
            self._end(job, JobFailed(str(exc)))
            return
        self._jobs[job.position] = job

    def _end(self, job: Job, event: object) -> None:
        """The job leaves: its tree (if any) is dropped from the scheduler, the event sent."""
        if job.done:
            return
        job.done = True
        if job.position is not None:
            self.engine.cancel(job.position)
            self._jobs.pop(job.position, None)
        with self._lock:
            self._held -= 1
        job.emit(event)

    def _step(self) -> None:
        engine = self.engine
        started = time.perf_counter()
        try:
            engine.scheduler.admit()
            engine.step()
        except Exception as exc:  # a failed step ends the requests in flight, never the server
            log.exception("engine step failed; ending %d requests", len(self._jobs))
            for job in list(self._jobs.values()):
                self._end(job, JobFailed(f"the engine failed: {exc}"))
            return
        if self.observer:
            self.observer.step(time.perf_counter() - started, engine)
        self._apply_stops()
        for slot in engine.scheduler.finished():
            self._tree_done(slot.position)
        self._publish()

    def _tree_done(self, position: int) -> None:
        job = self._jobs.pop(position, None)
        if job is None:
            return
        tree = job.tree
        if job.stream:
            self._send_progress(job)
        result = result_of(tree, self.backend.tokenizer.decode)
        if self.observer:
            self.observer.tree_done(result)
        job.results.append(result)
        job.emit(TreeDone(len(job.results) - 1, result))
        try:
            following = job.plan(job.results)
        except Exception as exc:
            following, job.position = None, None
            self._end(job, JobFailed(str(exc)))
        if job.done:
            return
        if following is None:
            job.position = None
            self._end(job, JobDone(list(job.results)))
        else:
            self._start_tree(job, following)

    def _publish(self) -> None:
        now = time.perf_counter()
        for job in list(self._jobs.values()):
            if job.stream:
                self._send_progress(job)
            if job.snapshots and now - job.last_snapshot >= SNAPSHOT_EVERY_S:
                job.last_snapshot = now
                job.emit(Snapshot(len(job.results), result_of(job.tree, self.backend.tokenizer.decode).to_dict()))

    def _send_progress(self, job: Job) -> None:
        deltas = []
        for branch in job.tree.branches:
            start = job.sent.get(branch.index, 0)
            if len(branch.token_ids) > start:
                deltas.append(BranchDelta(branch.index, branch.parent, branch.fork_at, start, list(branch.token_ids[start:])))
                job.sent[branch.index] = len(branch.token_ids)
        if deltas:
            job.emit(Progress(len(job.results), deltas))

    def _apply_stops(self) -> None:
        """A live branch whose recent text holds a stop string ends now ("stop")."""
        decode = self.backend.tokenizer.decode
        for job in self._jobs.values():
            if not job.stops:
                continue
            window = max(len(s) for s in job.stops) + 8
            for branch in job.tree.live:
                tail = decode(branch.token_ids[-window:])
                if any(s in tail for s in job.stops):
                    self.engine.end_branch(job.tree, branch, "stop")
