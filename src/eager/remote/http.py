"""HTTP to an OpenAI-compatible server: one kept asyncio client, SSE, retries, time-outs, errors.

One :class:`Http` holds one ``httpx.AsyncClient`` for a whole run, so a
driver keeps thousands of branch streams open on one event loop, without a
thread per stream, and reuses connections between requests. Server-sent
events are decoded by ``httpx-sse``.

Failures are of two kinds. :class:`Transient` ones (no connection, a
time-out, 429 or 5xx, a stream cut short) are retried ``retries`` times with
exponential back-off; the last one becomes :class:`ServerUnavailable`. Any
other 4xx is a :class:`ServerError` at once. Every error a caller sees is an
:class:`~eager.errors.EagerError` with a one-line message.

The public API of ``eager.remote`` is synchronous: :func:`run_sync` runs a
coroutine on a fresh event loop, in a helper thread when the calling thread
already runs one (a notebook).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence, TypeVar

import httpx
from httpx_sse import EventSource, SSEError

from eager.errors import EagerError

log = logging.getLogger(__name__)

T = TypeVar("T")

POOL_SHARDS = 8  # connection pools per run (see Http)


class RemoteError(EagerError):
    """Talking to a server failed."""


class ServerError(RemoteError):
    """The server answered with an error that retrying will not fix (a 4xx)."""

    def __init__(self, url: str, status: int, message: str) -> None:
        super().__init__(f"{url} answered {status}: {message}")
        self.status = status
        self.server_message = message


class ServerUnavailable(RemoteError):
    """No answer after every retry: unreachable, timed out, overloaded (429) or failing (5xx)."""


class BadAnswer(RemoteError):
    """The server answered something the protocol does not allow (not JSON, not a stream)."""


class Transient(Exception):
    """A failure worth retrying: no connection, a time-out, a 5xx or 429, a cut stream."""


DEFAULT_TIMEOUT_S = 600.0  # a request's whole life, streams included
DEFAULT_READ_TIMEOUT_S = 60.0  # silence allowed: no byte, or (streams) no event


@dataclass(frozen=True)
class HttpConfig:
    """How to talk to a server.

    Attributes:
        timeout_s: bounds each request's whole life, from connecting to the
            last byte of its answer (a stream's last event): a server that
            trickles bytes or sends keep-alive comments forever is cut off
            then (and the request retried).
        read_timeout_s: bounds connecting, each write and each read; on a
            stream, the wait for the next event (keep-alive comments and empty
            events do not count), so a silent stream fails that much sooner.
        retries: tries after the first for a transient failure.
        backoff_s: the first pause between tries; it doubles on each.
        api_key: sent as ``Authorization: Bearer``; by default ``$OPENAI_API_KEY``.
        basic_auth: (user, password) for HTTP Basic auth (from ``user:password@`` in the URL).
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = 3
    backoff_s: float = 0.5
    api_key: str | None = field(default_factory=lambda: os.environ.get("OPENAI_API_KEY"), repr=False)
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("timeout_s", "read_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise EagerError(f"{name} must be a number of seconds > 0, got {value}")
        if self.retries < 0:
            raise EagerError(f"retries must be >= 0, got {self.retries}")
        if self.backoff_s < 0:
            raise EagerError(f"backoff_s must be >= 0, got {self.backoff_s}")


class Http:
    """JSON and event streams over kept ``httpx.AsyncClient`` pools; use as ``async with Http(config)``.

    Streams are spread over :data:`POOL_SHARDS` clients: httpcore's pool
    scans every connection it holds at each request and each close, so one
    pool of 512 open streams spends more time scanning than streaming.
    """

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        self.requests = 0
        self.retried = 0
        self._clients: list[httpx.AsyncClient] = []

    async def __aenter__(self) -> "Http":
        headers = {"Accept": "application/json, text/event-stream"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        tls = httpx.create_ssl_context()  # one for all pools: loading the CA bundle takes ~20 ms
        self._clients = [
            httpx.AsyncClient(
                headers=headers,
                verify=tls,
                timeout=httpx.Timeout(min(self.config.read_timeout_s, self.config.timeout_s)),
                auth=httpx.BasicAuth(*self.config.basic_auth) if self.config.basic_auth else None,
                # the driver caps its streams itself; a pool only keeps connections for reuse
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
                trust_env=False,  # no proxy variables: a server is addressed as given
            )
            for _ in range(POOL_SHARDS)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        clients, self._clients = self._clients, []
        await asyncio.gather(*(client.aclose() for client in clients))

    @property
    def client(self) -> httpx.AsyncClient:
        """The next client, round robin."""
        if not self._clients:
            raise RuntimeError("Http is used outside `async with`")
        return self._clients[self.requests % len(self._clients)]

    async def once(self, method: str, url: str, body: dict | None = None) -> Any:
        """One request, no retry, within ``timeout_s`` from start to its last byte: the JSON answer."""
        client = self.client
        self.requests += 1
        try:
            async with asyncio.timeout(self.config.timeout_s):
                response = await client.request(method, url, json=body)
        except TimeoutError:
            raise Transient(f"{url} did not answer within the time-out of {self.config.timeout_s:g} s") from None
        except httpx.TransportError as exc:  # connection errors and per-read time-outs
            raise Transient(f"cannot reach {url}: {_one_line(exc)}") from exc
        raise_for_status(url, response.status_code, response.content)
        try:
            return response.json()
        except ValueError:
            raise BadAnswer(f"the server at {url} sent something that is not JSON: {response.content[:200]!r}") from None

    async def json(self, method: str, url: str, body: dict | None = None) -> Any:
        """One request, retried on transient failures: the JSON answer."""
        return await self.retrying(lambda: self.once(method, url, body))

    @asynccontextmanager
    async def stream(self, url: str, body: dict) -> AsyncIterator[AsyncIterator[dict]]:
        """POST ``body`` and iterate its server-sent events as JSON objects.

        Iteration ends at ``data: [DONE]`` or when the server closes the
        stream; leaving the block closes the connection, which makes the
        server stop generating. The whole block, the caller's work included,
        lives at most ``timeout_s``, and waits at most ``read_timeout_s`` for
        each event (keep-alive comments and empty events do not count): one
        timer per stream, moved on at each event (a :class:`Transient` when it fires).
        """
        client, config = self.client, self.config
        self.requests += 1
        deadline = asyncio.get_running_loop().time() + config.timeout_s
        try:
            async with asyncio.timeout_at(min(deadline, _now() + config.read_timeout_s)) as limit:
                try:
                    response = await client.send(client.build_request("POST", url, json=body), stream=True)
                except httpx.TransportError as exc:
                    raise Transient(f"cannot reach {url}: {_one_line(exc)}") from exc
                try:
                    if response.status_code >= 400:
                        try:
                            raw = await response.aread()
                        except httpx.TransportError as exc:
                            raise Transient(f"reading the answer of {url} failed: {_one_line(exc)}") from exc
                        raise_for_status(url, response.status_code, raw)
                    yield _events(response, url, lambda: limit.reschedule(min(deadline, _now() + config.read_timeout_s)))
                finally:
                    await response.aclose()
        except TimeoutError:
            if _now() >= deadline:
                raise Transient(f"a stream from {url} outlived the time-out of {config.timeout_s:g} s") from None
            raise Transient(f"the server at {url} sent no event for {config.read_timeout_s:g} s") from None

    async def retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await call()
            except Transient as exc:
                attempt += 1
                if attempt > self.config.retries:
                    raise self.gave_up(exc) from None
                await self.pause(attempt, exc)

    def gave_up(self, exc: Transient) -> ServerUnavailable:
        return ServerUnavailable(f"{exc} (gave up after {self.config.retries} retries)")

    async def pause(self, attempt: int, exc: Exception) -> None:
        """Wait backoff_s * 2^(attempt-1) before try ``attempt + 1``."""
        self.retried += 1
        delay = self.config.backoff_s * 2 ** (attempt - 1)
        log.warning("%s; retry %d/%d in %.1f s", exc, attempt, self.config.retries, delay)
        await asyncio.sleep(delay)


def _now() -> float:
    return asyncio.get_running_loop().time()


def _one_line(exc: BaseException) -> str:
    """An httpx error as one line: its message, else its type's name."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


async def _events(response: httpx.Response, url: str, progress: Callable[[], None]) -> AsyncIterator[dict]:
    try:
        async for sse in EventSource(response).aiter_sse():
            data = sse.data.strip()
            if data == "[DONE]":
                return
            if data:
                progress()
                yield event_of(data, url)
    except httpx.TransportError as exc:
        raise Transient(f"stream from {url} broke: {_one_line(exc)}") from exc
    except SSEError as exc:
        raise BadAnswer(f"the server at {url} did not answer with an event stream: {exc}") from None


def event_of(payload: str, url: str) -> dict:
    """One event's JSON; an ``error`` object in it is raised as the status it names."""
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise Transient(f"unreadable event from {url}: {payload[:200]!r}") from exc
    if not isinstance(event, dict):
        raise BadAnswer(f"the server at {url} sent an event that is not a JSON object: {payload[:200]!r}")
    if "error" in event:
        err = event["error"]
        message = err.get("message", err) if isinstance(err, dict) else err
        code = err.get("code", 500) if isinstance(err, dict) else 500
        if isinstance(code, int) and 400 <= code < 500 and code != 429:
            raise ServerError(url, code, str(message))
        raise Transient(f"{url} reported an error mid-stream: {str(message)[:500]}")
    return event


def raise_for_status(url: str, status: int, raw: bytes) -> None:
    if status < 400:
        return
    message = error_message(raw)
    if status == 429 or status >= 500:
        raise Transient(f"{url} answered {status}: {message}")
    raise ServerError(url, status, message)


def error_message(raw: bytes) -> str:
    """The message in an error body: OpenAI's ``{"error": {"message"}}``, FastAPI's ``detail``, or the text."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:500]
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message", body)))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:500]
    return str(body)[:500]


async def gather_limited(calls: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Await every call, at most ``limit`` at once; results in order."""
    gate = asyncio.Semaphore(max(1, limit))

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to the end from synchronous code, with or without a loop in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="eager-remote") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()  # type: ignore[arg-type]
