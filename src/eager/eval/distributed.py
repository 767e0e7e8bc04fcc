"""Growing an eval's trees on Ray workers (``eager eval --ray [ADDRESS]``).

:class:`RayExecutor` is an :class:`eager.eval.executors.Executor`: the eval runner hands
it a batch of trees and gets back (position, result) pairs as trees finish, the
same as from the local executor. Underneath:

* each worker is a Ray actor that opens its model once, with the very entry
  point a local run uses (:func:`eager.eval.executors.open_executor`), and grows the
  trees it is sent with the usual engine, streaming each finished tree back
  (a Ray streaming generator) along with engine statistics about once a second;
* a batch is split into one shard per worker by prompt: every tree of a prompt
  (its parallel samples, its EAGER-init tree) goes to the same worker, and
  prompts are dealt round-robin so shards hold about as many trees each;
* the driver (this process) receives results one by one and hands each to the
  runner, which grades it and appends its fsynced record before asking for the
  next: a worker never writes a file, and nothing received is lost;
* a worker that dies (its process or its node) loses only the trees it had not
  sent yet: they go to a new worker, at most ``retries`` times per shard, after
  which the run stops with an :class:`~eager.errors.EagerError` (the records
  written stay, and rerunning the command resumes).

A tree's sampling is keyed by its problem, not by its batch, so sharding does not
change what is sampled. Logits do depend slightly on the batch with llama.cpp
(float summation order); see docs/scale.md for when runs are bit-identical.

Ray is optional: it is imported only when an executor starts (``pip install 'ray==2.60.0'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

from eager.core.results import StepStats
from eager.errors import EagerError
from eager.core.tree import TreeRequest
from eager.eval.executors import Executor, ModelSpec, StepFn, open_executor
from eager.core.results import GenerationResult

log = logging.getLogger(__name__)

RAY_VERSION = "2.60.0"  # the version tested; the `ray` extra pins it
LOCAL = "local"  # the address that starts a cluster on this machine
STATS_EVERY_S = 1.0  # how often a worker sends engine statistics
WAIT_S = 1.0  # the driver checks start timeouts and reports progress at least this often


def import_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EagerError(f"growing trees on Ray workers needs Ray, which is not installed: pip install 'ray=={RAY_VERSION}'") from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how to run workers; every check raises :class:`EagerError`.

    Attributes:
        address: ``"local"`` starts a Ray cluster on this machine for the run and
            stops it at the end; anything else is passed to ``ray.init`` (a
            ``HEAD:6379`` address, or ``"auto"``) to join a running cluster. If
            this process is already connected to Ray, that connection is used.
        workers: Ray actors, each loading the model once (None: 2 on a local
            cluster, one per alive node of a running cluster).
        cpus_per_worker: CPUs each worker reserves; also llama.cpp's threads when
            the run sets none (None: this machine's CPUs / workers on a local
            cluster, the smallest node's CPUs on a running cluster).
        retries: a shard whose worker dies moves to a new worker at most this
            many times; then the run stops with an error.
        start_timeout_s: a worker that has not opened its model in this time
            (no free CPUs, a slow disk) stops the run with an error.
        open_worker: run in each worker to open its executor from the model spec;
            the default is the local entry point. A picklable function: tests
            pass one that opens a mock backend.
    """

    address: str = LOCAL
    connect_timeout_s: float = 10.0
    workers: int | None = None
    cpus_per_worker: int | None = None
    retries: int = 2
    start_timeout_s: float = 600.0
    open_worker: Callable[[ModelSpec], Executor] = field(default=open_executor, compare=False)

    def __post_init__(self) -> None:
        if not self.address:
            raise EagerError("ray needs an address like HEAD:6379, or none for a local cluster")
        if self.address not in (LOCAL, "auto"):
            _host_port(self.address)
        if self.workers is not None and self.workers < 1:
            raise EagerError(f"ray_workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker is not None and self.cpus_per_worker < 1:
            raise EagerError(f"ray_cpus_per_worker must be >= 1, got {self.cpus_per_worker}")
        if self.retries < 0:
            raise EagerError(f"ray_retries must be >= 0, got {self.retries}")
        if not self.start_timeout_s > 0:
            raise EagerError(f"the worker start timeout must be > 0 s, got {self.start_timeout_s}")


# -- the worker ---------------------------------------------------------------------------


class Worker:
    """One Ray actor: opens its executor once, then grows the shards it is sent.

    An error while opening is kept, not raised, so the driver can tell "the model
    does not load" (an error to report) from "the worker died" (a shard to retry).
    """

    def __init__(self, spec: ModelSpec, open_worker: Callable[[ModelSpec], Executor]) -> None:
        self.executor: Executor | None = None
        self.error: str | None = None
        try:
            self.executor = open_worker(spec)
        except Exception as error:
            detail = str(error) if isinstance(error, EagerError) else f"{type(error).__name__}: {error}"
            self.error = f"a Ray worker could not open model {spec.model!r}: {detail}"

    def ready(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "max_sequences": self.executor.max_sequences if self.executor is not None else 0,
            "pid": os.getpid(),
        }

    def run(self, shard: Sequence[tuple[int, TreeRequest]]) -> Iterator[tuple]:
        """Yields ("result", position, GenerationResult) per finished tree and
        ("stats", StepStats) about every ``STATS_EVERY_S``; raises what the engine raises.

        The engine runs in a thread so statistics flow while no tree finishes.
        """
        if self.executor is None:
            raise EagerError(self.error)
        events: queue.Queue = queue.Queue()
        positions = [position for position, _ in shard]

        def grow() -> None:
            try:
                for index, result in self.executor.run([request for _, request in shard], on_step=lambda s: events.put(("stats", s))):
                    events.put(("result", positions[index], result))
                events.put(("end",))
            except BaseException as error:  # handed to the generator, which raises it
                events.put(("error", error))

        threading.Thread(target=grow, name="eager-shard", daemon=True).start()
        latest: StepStats | None = None
        sent_at = 0.0
        while True:
            event = events.get()
            if event[0] == "stats":
                latest = event[1]
                if time.monotonic() - sent_at >= STATS_EVERY_S:
                    sent_at = time.monotonic()
                    yield event
            elif event[0] == "result":
                yield event
            elif event[0] == "end":
                if latest is not None:
                    yield ("stats", latest)
                return
            else:
                raise event[1]


# -- the driver ---------------------------------------------------------------------------


@dataclass
class _Slot:
    """A worker position; its actor is replaced when it dies."""

    number: int
    actor: Any
    ready_ref: Any
    started_at: float
    ready: bool = False


@dataclass
class _Shard:
    """The trees of one batch sent to one worker, and those still owed."""

    number: int
    slot: _Slot
    owed: dict[int, TreeRequest]
    failures: int = 0
    stats: StepStats | None = None


def deal_by_prompt(requests: Sequence[TreeRequest], n_shards: int) -> list[list[tuple[int, TreeRequest]]]:
    """Prompts in order of first appearance, dealt round-robin: a prompt's trees share a shard."""
    rank: dict[str, int] = {}
    shards: list[list[tuple[int, TreeRequest]]] = [[] for _ in range(n_shards)]
    for position, request in enumerate(requests):
        shard = rank.setdefault(request.prompt, len(rank)) % n_shards
        shards[shard].append((position, request))
    return [shard for shard in shards if shard]


class RayExecutor:
    """Grows trees on Ray workers; see the module docstring.

    Nothing starts until the first :meth:`run` (or :attr:`max_sequences`): a run
    with nothing left to generate never touches Ray.
    """

    def __init__(self, spec: ModelSpec, options: RayOptions) -> None:
        self.spec = spec
        self.options = options
        self._ray = None
        self._owns_connection = False
        self._slots: list[_Slot] = []
        self._max_sequences: dict[int, int] = {}  # slot -> what its worker reported
        self._worker_class = None
        self._cpus = 1

    # -- the cluster -----------------------------------------------------------------------

    def _start(self) -> None:
        if self._slots:
            return
        ray = self._ray or import_ray()
        self._ray = ray
        workers, cpus = self._connect(ray)
        threads = self.spec.engine.threads or cpus
        self.spec = replace(self.spec, engine=replace(self.spec.engine, threads=threads))
        self._cpus = cpus
        self._worker_class = ray.remote(Worker).options(num_cpus=cpus, max_restarts=0, scheduling_strategy="SPREAD")
        self._slots = [self._new_slot(number) for number in range(workers)]
        log.info("started %d Ray workers with %d CPUs and %d threads each", workers, cpus, threads)

    def _connect(self, ray) -> tuple[int, int]:
        """Join or start a cluster (or use this process's connection); returns (workers, CPUs per worker)."""
        opts = self.options
        if opts.address == LOCAL:
            workers = opts.workers or 2
            cpus = opts.cpus_per_worker or max(1, (os.cpu_count() or 1) // workers)
            if not ray.is_initialized():
                # address="local": a new cluster, even where `ray start` left one to auto-detect
                self._init(ray, address=LOCAL, num_cpus=workers * cpus, include_dashboard=False)
            return workers, cpus
        if ray.is_initialized():
            return self._sizes_on_cluster(ray)
        if opts.address != "auto":
            _check_reachable(opts.address, opts.connect_timeout_s)
        self._init(ray, address=opts.address)
        return self._sizes_on_cluster(ray)

    def _init(self, ray, **kwargs) -> None:
        try:
            with _signals_kept():
                ray.init(log_to_driver=False, logging_level=logging.WARNING, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as error:
            if kwargs["address"] == LOCAL:
                raise EagerError(f"cannot start a local Ray cluster: {_first_line(error)}") from None
            raise EagerError(
                f"cannot join the Ray cluster at {kwargs['address']}: {_first_line(error)} (is it up? `ray status`; "
                "a cluster with token authentication also needs RAY_AUTH_MODE=token and its token here, see docs/scale.md)"
            ) from None
        self._owns_connection = True

    def _sizes_on_cluster(self, ray) -> tuple[int, int]:
        node_cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
        node_cpus = [cpus for cpus in node_cpus if cpus > 0] or [1]
        workers = self.options.workers or len(node_cpus)
        cpus = self.options.cpus_per_worker or min(node_cpus)
        total = int(ray.cluster_resources().get("CPU", 0))
        if workers * cpus > total:
            log.warning("%d workers x %d CPUs exceed the cluster's %d CPUs: some wait for room", workers, cpus, total)
        return workers, cpus

    def _new_slot(self, number: int) -> _Slot:
        actor = self._worker_class.remote(self.spec, self.options.open_worker)
        return _Slot(number, actor, actor.ready.remote(), time.monotonic())

    def _replace_actor(self, slot: _Slot) -> None:
        self._ray.kill(slot.actor, no_restart=True)
        fresh = self._new_slot(slot.number)
        slot.actor, slot.ready_ref, slot.started_at, slot.ready = fresh.actor, fresh.ready_ref, fresh.started_at, False
        self._max_sequences.pop(slot.number, None)

    def _check_ready(self, slot: _Slot, timeout: float = 0.0, *, death_is_error: bool = False) -> None:
        """Note a worker that has opened its model; raise if it cannot, or takes too long.

        A worker that died while opening is left to the run loop, where the shard
        sent to it fails and is retried, unless ``death_is_error``.
        """
        if slot.ready:
            return
        done, _ = self._ray.wait([slot.ready_ref], timeout=timeout)
        if done:
            try:
                info = self._ray.get(slot.ready_ref)
            except self._ray.exceptions.RayActorError as error:
                if death_is_error:
                    raise EagerError(f"a Ray worker died while opening model {self.spec.model!r}: {_first_line(error)}") from None
                return
            if info["error"]:
                raise EagerError(info["error"])
            slot.ready = True
            self._max_sequences[slot.number] = info["max_sequences"]
        elif time.monotonic() - slot.started_at > self.options.start_timeout_s:
            raise EagerError(
                f"a Ray worker was not up after {self.options.start_timeout_s:.0f} s: it needs {self._cpus} free CPUs "
                f"and must load {self.spec.model!r}; check `ray status`, or lower --ray-workers / --ray-cpus-per-worker"
            )

    @property
    def max_sequences(self) -> int:
        """What the workers report (they open the same spec); waits for the first one up."""
        self._start()
        while not self._max_sequences:
            for slot in self._slots:
                self._check_ready(slot, timeout=WAIT_S / len(self._slots), death_is_error=True)
        return min(self._max_sequences.values())

    def close(self) -> None:
        ray, self._ray = self._ray, None
        if ray is None:
            return
        for slot in self._slots:
            ray.kill(slot.actor, no_restart=True)
        self._slots = []
        if self._owns_connection:
            ray.shutdown()

    # -- a batch ---------------------------------------------------------------------------

    def run(self, requests: Sequence[TreeRequest], on_step: StepFn | None = None) -> Iterator[tuple[int, GenerationResult]]:
        if not requests:
            return
        self._start()
        ray = self._ray
        shards = [
            _Shard(number, self._slots[number], dict(items))
            for number, items in enumerate(deal_by_prompt(requests, len(self._slots)))
        ]
        streams = {self._send(shard): shard for shard in shards}
        died = _worker_death_errors(ray)
        spent = 0  # tokens generated by workers that died
        done = 0
        start = time.perf_counter()
        complete = False
        try:
            while streams:
                for shard in streams.values():
                    self._check_ready(shard.slot)
                ready, _ = ray.wait(list(streams), num_returns=1, timeout=WAIT_S)
                for stream in ready:
                    shard = streams[stream]
                    try:
                        event = ray.get(next(stream))
                    except StopIteration:
                        del streams[stream]
                        if shard.owed:
                            raise EagerError(f"Ray shard {shard.number} ended with {len(shard.owed)} trees not grown") from None
                        continue
                    except died as error:
                        del streams[stream]
                        spent += shard.stats.generated_tokens if shard.stats else 0
                        shard.stats = None
                        self._recover(shard, error)
                        streams[self._send(shard)] = shard
                        continue
                    except ray.exceptions.RayTaskError as error:
                        raise _task_error(error) from None
                    if event[0] == "result":
                        _, position, result = event
                        del shard.owed[position]
                        done += 1
                        yield position, result
                    else:
                        shard.stats = event[1]
                if on_step is not None:
                    on_step(_combined(shards, streams, spent, done, time.perf_counter() - start))
            complete = True
        finally:
            if not complete:
                self._abandon()

    def _send(self, shard: _Shard) -> Any:
        return shard.slot.actor.run.remote(sorted(shard.owed.items()))

    def _recover(self, shard: _Shard, error: Exception) -> None:
        """Move a dead worker's unfinished trees to a new worker, or give up."""
        shard.failures += 1
        cause = _first_line(error)
        if shard.failures > self.options.retries:
            raise EagerError(
                f"a Ray worker died {shard.failures} times growing the same {len(shard.owed)} trees "
                f"(last: {cause}); finished records are kept: run the same command again to resume"
            )
        log.warning(
            "Ray worker %d died (%s); its %d unfinished trees go to a new worker (retry %d of %d)",
            shard.slot.number, cause, len(shard.owed), shard.failures, self.options.retries,
        )
        self._replace_actor(shard.slot)

    def _abandon(self) -> None:
        """The caller stopped early (an error, an interrupt): stop every worker's engine.

        A later run starts fresh workers.
        """
        for slot in self._slots:
            self._ray.kill(slot.actor, no_restart=True)
        self._slots = []
        self._max_sequences.clear()


def _combined(shards: list[_Shard], streams: dict, spent: int, done: int, elapsed: float) -> StepStats:
    """One view of every shard's latest engine statistics."""
    running = [shard.stats for shard in streams.values() if shard.stats is not None]
    return StepStats(
        steps=sum(shard.stats.steps for shard in shards if shard.stats is not None),
        prompts_done=done,
        prompts_in_flight=sum(s.prompts_in_flight for s in running),
        live_branches=sum(s.live_branches for s in running),
        generated_tokens=spent + sum(shard.stats.generated_tokens for shard in shards if shard.stats is not None),
        elapsed_s=elapsed,
    )


@contextlib.contextmanager
def _signals_kept() -> Iterator[None]:
    """Keep this process's SIGTERM and SIGINT handlers across ``ray.init``.

    ``ray.init`` replaces the SIGTERM handler with ``sys.exit(15)`` (and its core
    worker adds one that dumps a stack): SIGTERM would end the run with exit 15,
    a dump and no word. Restored, SIGTERM ends it as Ctrl-C does (the CLI's
    handler), and the ``finally`` blocks stop the workers and the cluster.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signals can be set only from the main thread; ray.init leaves them alone there too
        return
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            if handler is not None:  # None: set outside Python, cannot be restored
                signal.signal(signum, handler)


def _host_port(address: str) -> tuple[str, int]:
    """HEAD:PORT (a ray:// prefix allowed) -> (host, port); anything else is a clear error."""
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EagerError(f"bad Ray address {address!r}: expected HOST:PORT (e.g. 10.0.0.1:6379), auto, or none for a local cluster")
    return host.strip("[]"), int(port)


def _check_reachable(address: str, timeout_s: float) -> None:
    """Fail in seconds where ray.init would wait for a head that is not there."""
    import socket

    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        raise EagerError(f"no Ray cluster answers at {address} ({error.strerror or error}); is it up? `ray status` on the head") from None


def _worker_death_errors(ray) -> tuple[type[BaseException], ...]:
    """Errors meaning a worker (or its node, or a result it held) is gone: its shard is retried."""
    names = ("RayActorError", "WorkerCrashedError", "ObjectLostError", "NodeDiedError", "LocalRayletDiedError")
    return tuple(getattr(ray.exceptions, name) for name in names if hasattr(ray.exceptions, name))


def _task_error(error: Exception) -> Exception:
    """An error the worker's code raised: an EagerError keeps its one line, anything else its traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, EagerError):
        return EagerError(str(cause))
    return error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]
