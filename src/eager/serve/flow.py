"""One request's life on the asyncio side: submit its job, then wait for the result or stream it.

Events from the engine loop land in an asyncio queue. A client that goes
away (``http.disconnect``) or runs past the time-out has its job cancelled,
so its branches leave the cache before the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator

from starlette.requests import Request

from eager.serve.online import Job, JobDone, JobFailed, OnlineEngine, Progress, Snapshot, TreeDone
from eager.serve.requests import ApiError, Planned
from eager.serve.responses import Format, eager_summary, usage
from eager.serve.stream import ChoiceStreams, sse

log = logging.getLogger(__name__)


def submit(online: OnlineEngine, planned: list[Planned], *, stream: bool = False, snapshots: bool = False) -> tuple[list[Job], asyncio.Queue]:
    """One job per prompt, queued together; events arrive as (prompt, event). 429 when the server is full."""
    events: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    jobs: list[Job] = []
    for i, p in enumerate(planned):
        sink = lambda event, i=i: loop.call_soon_threadsafe(events.put_nowait, (i, event))  # noqa: E731
        job = Job(p.first, p.plan, sink, stream=stream, snapshots=snapshots, stops=p.stops)
        if not online.submit(job):
            for queued in jobs:
                online.cancel(queued)
            raise ApiError(429, f"the server holds {online.max_jobs} requests already; retry shortly", type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": "1"})
        jobs.append(job)
    return jobs, events


async def _watch_disconnect(request: Request, online: OnlineEngine, jobs: list[Job]) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            log.info("client went away: cancelling its request")
            for job in jobs:
                online.cancel(job)
            return


@contextlib.asynccontextmanager
async def watching(request: Request, online: OnlineEngine, jobs: list[Job]):
    """While inside: a disconnect cancels the jobs. On leaving, those not done are cancelled."""
    watcher = asyncio.create_task(_watch_disconnect(request, online, jobs))
    try:
        yield
    finally:
        watcher.cancel()
        for job in jobs:
            online.cancel(job)  # a no-op for a finished job


def _failed(event: JobFailed) -> ApiError:
    return ApiError(500, event.message, type="server_error", code="engine_error")


def _timed_out(seconds: float) -> ApiError:
    return ApiError(504, f"the request ran past this server's time-out of {seconds:g} s", type="timeout_error", code="timeout")


async def wait_for_results(events: asyncio.Queue, prompts: int, timeout: float) -> list[list]:
    """Each prompt's results once all are done (progress events are skipped)."""
    parts: dict[int, list] = {}
    async with asyncio.timeout(timeout):
        while len(parts) < prompts:
            i, event = await events.get()
            if isinstance(event, JobDone):
                parts[i] = event.results
            elif isinstance(event, JobFailed):
                raise _failed(event)
    return [parts[i] for i in range(prompts)]


async def complete(request: Request, online: OnlineEngine, planned: list[Planned], fmt: Format, timeout: float) -> dict:
    jobs, events = submit(online, planned)
    async with watching(request, online, jobs):
        try:
            parts = await wait_for_results(events, len(planned), timeout)
        except TimeoutError:
            raise _timed_out(timeout) from None
    return fmt.response(parts, planned)


async def stream_chunks(request: Request, online: OnlineEngine, jobs: list[Job], events: asyncio.Queue, planned: list[Planned], fmt: Format, timeout: float) -> AsyncIterator[bytes]:
    """SSE: a chunk per choice as its branch grows, a last chunk with usage, then [DONE]."""
    decode, n = online.backend.tokenizer.decode, planned[0].n
    streams = [ChoiceStreams(fmt, decode, p.stops, base=i * n) for i, p in enumerate(planned)]
    parts: dict[int, list] = {}
    failed = None
    async with watching(request, online, jobs):
        try:
            async with asyncio.timeout(timeout):
                while len(parts) < len(planned) and failed is None:
                    i, event = await events.get()
                    if isinstance(event, JobDone):
                        parts[i] = event.results
                    failed = event if isinstance(event, JobFailed) else None
                    for choice in _chunk_choices(streams[i], event):
                        yield sse(fmt.chunk([choice]))
        except TimeoutError:
            yield sse(_timed_out(timeout).body())
            return
    if failed is not None:
        yield sse(_failed(failed).body())
        return
    done = [parts[i] for i in range(len(planned))]
    yield sse(fmt.chunk([], usage=usage(done), eager=eager_summary(done, planned)))
    yield sse("[DONE]")


def _chunk_choices(streams: ChoiceStreams, event: object) -> list[dict]:
    if isinstance(event, Progress):
        return streams.on_progress(event)
    if isinstance(event, TreeDone):
        return streams.on_tree_done(event)
    return []


async def stream_snapshots(request: Request, online: OnlineEngine, job: Job, events: asyncio.Queue, timeout: float, theta: float | None = None) -> AsyncIterator[bytes]:
    """SSE for the playground: the growing tree (GenerationResult.to_dict(), with ``theta``) several times a second."""
    extra = {} if theta is None else {"theta": theta}
    async with watching(request, online, [job]):
        try:
            async with asyncio.timeout(timeout):
                while True:
                    _, event = await events.get()
                    if isinstance(event, Snapshot):
                        yield sse({"tree": event.tree, "result": {**event.result, **extra}, "done": False})
                    elif isinstance(event, TreeDone):
                        yield sse({"tree": event.tree, "result": {**event.result.to_dict(), **extra}, "done": True})
                    elif isinstance(event, JobFailed):
                        yield sse(_failed(event).body())
                        return
                    elif isinstance(event, JobDone):
                        yield sse("[DONE]")
                        return
        except TimeoutError:
            yield sse(_timed_out(timeout).body())
