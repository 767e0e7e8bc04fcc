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


def submit(online: OnlineEngine, planned: Planned, *, stream: bool = False, snapshots: bool = False) -> tuple[Job, asyncio.Queue]:
    """The job for ``planned``, queued; 429 when the server holds its maximum already."""
    events: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    job = Job(planned.first, planned.plan, lambda event: loop.call_soon_threadsafe(events.put_nowait, event), stream=stream, snapshots=snapshots, stops=planned.stops)
    if not online.submit(job):
        raise ApiError(429, f"the server holds {online.max_jobs} requests already; retry shortly", type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": "1"})
    return job, events


async def _watch_disconnect(request: Request, online: OnlineEngine, job: Job) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            log.info("client went away: cancelling its request")
            online.cancel(job)
            return


@contextlib.asynccontextmanager
async def watching(request: Request, online: OnlineEngine, job: Job):
    """While inside: a disconnect cancels the job. On leaving, the job is cancelled unless done."""
    watcher = asyncio.create_task(_watch_disconnect(request, online, job))
    try:
        yield
    finally:
        watcher.cancel()
        online.cancel(job)  # a no-op for a finished job


def _failed(event: JobFailed) -> ApiError:
    return ApiError(500, event.message, type="server_error", code="engine_error")


def _timed_out(seconds: float) -> ApiError:
    return ApiError(504, f"the request ran past this server's time-out of {seconds:g} s", type="timeout_error", code="timeout")


async def wait_for_results(events: asyncio.Queue, timeout: float) -> list:
    """The job's results once it is done (progress events are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            event = await events.get()
            if isinstance(event, JobDone):
                return event.results
            if isinstance(event, JobFailed):
                raise _failed(event)


async def complete(request: Request, online: OnlineEngine, planned: Planned, fmt: Format, timeout: float) -> dict:
    job, events = submit(online, planned)
    async with watching(request, online, job):
        try:
            results = await wait_for_results(events, timeout)
        except TimeoutError:
            raise _timed_out(timeout) from None
    return fmt.response(results, planned)


async def stream_chunks(request: Request, online: OnlineEngine, job: Job, events: asyncio.Queue, planned: Planned, fmt: Format, timeout: float) -> AsyncIterator[bytes]:
    """SSE: a chunk per choice as its branch grows, a last chunk with usage, then [DONE]."""
    streams = ChoiceStreams(fmt, online.backend.tokenizer.decode, planned.stops)
    async with watching(request, online, job):
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await events.get()
                    if isinstance(event, (JobDone, JobFailed)):
                        break
                    for choice in _chunk_choices(streams, event):
                        yield sse(fmt.chunk([choice]))
        except TimeoutError:
            yield sse(_timed_out(timeout).body())
            return
    if isinstance(event, JobFailed):
        yield sse(_failed(event).body())
        return
    yield sse(fmt.chunk([], usage=usage(event.results), eager=eager_summary(event.results, planned)))
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
    async with watching(request, online, job):
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await events.get()
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
