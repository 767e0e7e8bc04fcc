"""Executors: where an evaluation's trees grow.

An executor takes :class:`~eager.core.tree.TreeRequest` objects (prompts as
text; each tree keyed for its sampling) and yields (position, result) as
each tree finishes. :class:`LocalExecutor` runs the engine on a backend in
this process, :class:`RemoteExecutor` drives an OpenAI-compatible server,
and ``eager.eval.distributed.RayExecutor`` shards requests over Ray workers,
each with its own executor opened by the same :func:`open_executor`.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

from eager.api import DEFAULT_BACKEND_SEQUENCES, load_backend
from eager.backends.base import Backend
from eager.core.config import EngineConfig
from eager.core.results import GenerationResult
from eager.core.tree import TreeRequest, tokenized
from eager.core.results import StepStats
from eager.engine import Engine

StepFn = Callable[[StepStats], None]


class Executor(Protocol):
    """Grows trees: yields (request position, result) as each tree finishes, in any order."""

    @property
    def max_sequences(self) -> int:
        """The largest tree (sequences) it can grow."""
        ...

    def run(self, requests: Sequence[TreeRequest], on_step: StepFn | None = None) -> Iterator[tuple[int, GenerationResult]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ModelSpec:
    """How to open a model for growing trees, here or in a Ray worker.

    Attributes:
        model: packaged model name, .gguf path or ``openai:`` spec.
        engine: the local engine's context cells, threads and prompts in flight.
        max_sequences: sequences the backend holds at once.
    """

    model: str
    engine: EngineConfig = field(default_factory=EngineConfig)
    max_sequences: int = DEFAULT_BACKEND_SEQUENCES
    chat_template: str | None = None  # remote models: a .gguf or Jinja file applied on this side


class LocalExecutor:
    """The engine over one backend in this process: tokenise, run, detokenise."""

    def __init__(self, backend: Backend, *, max_prompts_in_flight: int | None = None, owns_backend: bool = False) -> None:
        self.backend = backend
        self.max_prompts_in_flight = max_prompts_in_flight
        self.owns_backend = owns_backend

    @property
    def max_sequences(self) -> int:
        return self.backend.max_sequences

    def run(self, requests: Sequence[TreeRequest], on_step: StepFn | None = None) -> Iterator[tuple[int, GenerationResult]]:
        tokens = [tokenized(r, self.backend.tokenizer) for r in requests]
        engine = Engine(self.backend, max_prompts_in_flight=self.max_prompts_in_flight, on_step=on_step)
        yield from engine.run(tokens)

    def close(self) -> None:
        if self.owns_backend:
            self.backend.close()


class RemoteExecutor:
    """Trees grown on an OpenAI-compatible server (``openai:http://HOST:PORT/v1#name``).

    The server's own prefix cache shares a forked prefix; see docs/remote.md.
    The streams run on an event loop in a thread of their own, and each tree is
    yielded soon after it finishes, so the eval records it while the others go
    on: an interrupt or a failing server loses only trees still growing.
    Leaving the iteration early (an interrupt, an error) cancels the streams,
    which closes them, before it returns.
    """

    max_sequences = 256
    STOP_WAIT_S = 5.0  # how long an interrupted run waits for its streams to close

    def __init__(self, server, *, max_concurrency: int = 16) -> None:
        self.server = server
        self.max_concurrency = max_concurrency

    def run(self, requests: Sequence[TreeRequest], on_step: StepFn | None = None) -> Iterator[tuple[int, GenerationResult]]:
        from eager.remote import RemoteGenerationError

        events: queue.Queue = queue.Queue()
        loop, task, thread = self._start(requests, events)
        yielded: set[int] = set()
        try:
            while True:
                event = events.get()
                if event[0] == "stats" and on_step is not None:
                    on_step(event[1])
                elif event[0] == "result":
                    yielded.add(event[1])
                    yield event[1], event[2]
                elif event[0] == "end":  # every result: those not handed on yet come now
                    yield from ((i, r) for i, r in enumerate(event[1]) if i not in yielded)
                    return
                elif event[0] == "error":
                    if isinstance(event[1], RemoteGenerationError):  # trees it finished in its last moments
                        yield from ((i, r) for i, r in enumerate(event[1].results) if r is not None and i not in yielded)
                    raise event[1]
        finally:
            if thread.is_alive():
                try:
                    loop.call_soon_threadsafe(task.cancel)
                except RuntimeError:  # the loop closed between the two checks: the thread is ending on its own
                    pass
                thread.join(self.STOP_WAIT_S)

    def _start(self, requests: Sequence[TreeRequest], events: queue.Queue) -> tuple[asyncio.AbstractEventLoop, asyncio.Task, threading.Thread]:
        """The remote run on a new loop in a daemon thread, putting ("stats" | "result" | "end" | "error", ...) on ``events``."""
        from eager.remote.generate import run_remote

        loop = asyncio.new_event_loop()
        task = loop.create_task(
            run_remote(
                self.server, requests, max_concurrency=self.max_concurrency, on_step=lambda s: events.put(("stats", s)),
                on_result=lambda i, r: events.put(("result", i, r)),
            )
        )  # fmt: skip

        def grow() -> None:
            asyncio.set_event_loop(loop)
            try:
                results, _ = loop.run_until_complete(task)
                events.put(("end", results))
            except BaseException as error:  # handed to the caller's thread, which raises it
                events.put(("error", error))
            finally:  # as asyncio.run ends: every task left (the branches' streams) cancelled and awaited
                left = asyncio.all_tasks(loop)
                for other in left:
                    other.cancel()
                if left:
                    loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        thread = threading.Thread(target=grow, name="eager-remote", daemon=True)
        thread.start()
        return loop, task, thread

    def close(self) -> None:
        return None


def open_executor(spec: ModelSpec) -> Executor:
    """The one way from a model spec to an executor: a local run and every Ray worker call it."""
    from eager.remote import connect, parse_remote_model

    if remote := parse_remote_model(spec.model):
        url, served_model = remote
        return RemoteExecutor(connect(url, served_model, chat_template=spec.chat_template, timeout_s=spec.engine.timeout_s, read_timeout_s=spec.engine.read_timeout_s))
    backend = load_backend(spec.model, engine=spec.engine, max_sequences=spec.max_sequences)
    return LocalExecutor(backend, max_prompts_in_flight=spec.engine.max_prompts_in_flight, owns_backend=True)


def absolute_model(model: str) -> str:
    """A .gguf path made absolute, as workers start elsewhere; anything else as given."""
    if (os.sep in model or model.endswith(".gguf")) and Path(model).expanduser().is_file():
        return str(Path(model).expanduser().resolve())
    return model
