"""ASGI middleware in front of every route: the body size limit and request counting.

The body is read here (up to the limit) and replayed to the app, so a too
large body is refused with 413 before any parsing, whether or not it says its
length; the counting wraps ``send`` to see each response's status.
"""

from __future__ import annotations

import json
from typing import Any

from eager.serve.requests import ApiError

ROUTES = frozenset({"/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/eager/tree"})
DRAIN_FACTOR = 64  # a refused body is read (and dropped) up to this many times the limit, so the client sees the 413


async def send_error(send, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), str(v).encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body exceeds this server's limit of {limit} bytes", code="request_too_large")


class BodyLimit:
    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit():
            return await send_error(send, ApiError(400, "invalid Content-Length header"))
        body, complete = await self._read(receive, int(declared) > self.limit)
        if body is None:
            return await send_error(send, too_large(self.limit))
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive() if complete else {"type": "http.disconnect"}

        await self.app(scope, replay, send)

    async def _read(self, receive, refused: bool) -> tuple[bytes | None, bool]:
        """(the body, or None if over the limit; whether the client is still connected)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return (None if refused else b"".join(chunks)), False
            size += len(message.get("body", b""))
            if not refused and size <= self.limit:
                chunks.append(message.get("body", b""))
            refused = refused or size > self.limit
            if not message.get("more_body") or size > DRAIN_FACTOR * self.limit:
                return (None if refused else b"".join(chunks)), True


class CountRequests:
    """``eager_requests{endpoint, status}`` for every response."""

    def __init__(self, app, metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting(message) -> None:
            if message["type"] == "http.response.start":
                path = scope["path"] if scope["path"] in ROUTES else "other"
                self.metrics.requests.labels(path, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting)
