"""A hostile OpenAI-compatible server for tests (a helper module, not a test file).

:class:`HostileServer` is the scripted vLLM-like server of
tests/scripted_server.py (PositionScript) that misbehaves in one chosen way;
everything it does not break answers as the scripted server does, so a
failure is the one under test. Modes:

* streams: ``keepalive`` (SSE comments forever), ``empty-events`` (events with
  no data forever), ``trickle`` (a valid event, one byte every 0.1 s),
  ``endless`` (tokens forever, ``max_tokens`` ignored), ``reset`` (a TCP reset
  before any token, every stream), ``reset-once`` (a reset after two tokens, once);
* a first streamed event of the wrong shape: ``bad_event`` (raw JSON text, sent
  before the ordinary stream goes on);
* probes: ``models-list`` / ``models-garbage`` (``/v1/models`` answers a JSON
  list / not JSON), ``probe-list`` (the logprobs probe answers a JSON list).

``python tests/hostile_server.py --port 0 --delay S`` serves the slow but
well-behaved script in its own process (the Ctrl-C test) and prints ``PORT <n>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct

from scripted_server import PositionScript, ScriptedServer, _json, _send, _sse_chunk, serve_forever

STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
TICK_S = 0.05


def raw_chunk(payload: bytes) -> bytes:
    """One HTTP chunk carrying ``payload`` as it is."""
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def logprob_event(*values: str) -> str:
    """A vLLM-format token event whose top logprobs are the raw JSON texts ``values`` (``NaN``, ``"x"`` ...)."""
    top = ", ".join(f'"token_id:{1000 * (i + 1)}": {v}' for i, v in enumerate(values))
    logprobs = f'{{"tokens": ["token_id:1000"], "top_logprobs": [{{{top}}}], "text_offset": [0]}}'
    return f'{{"choices": [{{"index": 0, "text": "", "finish_reason": null, "logprobs": {logprobs}}}]}}'


class HostileServer(ScriptedServer):
    """The scripted server, broken in the way ``mode`` says (or by ``bad_event``)."""

    def __init__(self, mode: str = "", *, bad_event: str | None = None, **knobs) -> None:
        super().__init__(PositionScript(), **knobs)
        self.mode = mode
        self.bad_event = bad_event
        self.resets = 0

    async def route(self, method: str, path: str, body: dict, writer) -> bool:
        if path == "/v1/models" and self.mode == "models-list":
            return await _json(writer, 200, [{"id": "fake-model"}])  # type: ignore[arg-type]
        if path == "/v1/models" and self.mode == "models-garbage":
            raw = b"<html>hello</html>"
            await _send(writer, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s" % (len(raw), raw))
            return True
        if path == "/v1/completions" and not body.get("stream") and self.mode == "probe-list":
            return await _json(writer, 200, [])  # type: ignore[arg-type]
        return await super().route(method, path, body, writer)

    async def stream(self, body: dict, history: list[int], k: int, faults: tuple, writer) -> bool:
        if self.bad_event is not None:
            await _send(writer, _sse_chunk(self.bad_event))
        breaker = {"keepalive": self._forever, "empty-events": self._forever, "trickle": self._trickle, "endless": self._endless}
        if self.mode in breaker:
            await breaker[self.mode](history, k, writer)
            return False
        if self.mode == "reset" or (self.mode == "reset-once" and self.resets == 0):
            return await self._reset(history, k, writer)
        return await super().stream(body, history, k, faults, writer)

    async def _forever(self, history: list[int], k: int, writer) -> None:
        filler = b": keep-alive\n\n" if self.mode == "keepalive" else b"data: \n\n"
        while True:
            await _send(writer, raw_chunk(filler))
            await asyncio.sleep(TICK_S)

    async def _trickle(self, history: list[int], k: int, writer) -> None:
        event = _sse_chunk(json.dumps(self.chunk(tuple(history), 1000, k, finish=None)))
        while True:
            for byte in event:
                await _send(writer, bytes([byte]))
                await asyncio.sleep(0.1)

    async def _endless(self, history: list[int], k: int, writer) -> None:
        while True:
            token = self.script.draw(tuple(history), 0.0, None)
            await _send(writer, _sse_chunk(json.dumps(self.chunk(tuple(history), token, k, finish=None))))
            history.append(token)
            await asyncio.sleep(0.001)

    async def _reset(self, history: list[int], k: int, writer) -> bool:
        for _ in range(2 if self.mode == "reset-once" else 0):
            token = self.script.draw(tuple(history), 0.0, None)
            await _send(writer, _sse_chunk(json.dumps(self.chunk(tuple(history), token, k, finish=None))))
            history.append(token)
        self.resets += 1
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST, not FIN
        writer.transport.abort()
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each streamed token")
    parser.add_argument("--mode", default="")
    args = parser.parse_args()

    serve_forever(HostileServer(args.mode, delay_s=args.delay), args.port)


if __name__ == "__main__":
    main()
