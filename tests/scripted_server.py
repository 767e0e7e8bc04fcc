"""A scripted OpenAI-compatible server for tests (a helper module, not a test file).

It speaks HTTP/1.1 on 127.0.0.1 over raw asyncio (keep-alive, chunked
server-sent events), so one process holds thousands of streams. What it
generates comes from a *script*:

* :class:`LogitsScript` wraps the mock backend's logits function, so the
  remote driver and the local engine on ``MockBackend`` see the same
  distributions at the same histories (the rule suite runs on both);
* :class:`PositionScript` is the vLLM-like fake of the transport tests:
  the token at completion position p is 1000 + p, nearly flat top-5 at
  p % 6 == 3, peaked elsewhere.

Two wire formats: ``flavour="vllm"`` (``token_id:N`` logprobs, ``/tokenize``
with messages, the end token in the chunk that finishes) and
``flavour="llama-server"`` (``logprobs.content`` with ids and bytes,
``/apply-template``, ``/props``, a separate final chunk with usage). Knobs
for bad behaviour: no logprobs, a logprobs cap, 503s, a cut stream, death
after some streams.

``python tests/scripted_server.py --port 0`` serves a script in its own
process (the scale test) and prints ``PORT <n>`` when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import threading
from typing import Iterator, Protocol

import numpy as np

END_TEXT = "<|im_end|>"


class Script(Protocol):
    eos: int

    def tokenize(self, text: str) -> list[int]: ...

    def piece(self, token: int) -> str: ...

    def top(self, history: tuple[int, ...], k: int) -> list[tuple[int, float]]: ...

    def draw(self, history: tuple[int, ...], temperature: float, rng: np.random.Generator) -> int: ...


class LogitsScript:
    """The mock backend's model as a server: log-softmax of ``logits_fn(prompt + tokens)``."""

    def __init__(self, logits_fn=None, vocab_size: int = 32) -> None:
        from eager.backends.mock import EOG_ID, MockTokenizer, default_logits

        self.tokenizer = MockTokenizer(vocab_size)
        self.logits_fn = logits_fn or default_logits(vocab_size)
        self.eos = EOG_ID

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode_prompt(text, chat=False)

    def piece(self, token: int) -> str:
        return END_TEXT if token == self.eos else self.tokenizer.decode([token])

    def logprobs(self, history: tuple[int, ...]) -> np.ndarray:
        logits = np.asarray(self.logits_fn(history), dtype=np.float64)
        shifted = logits - logits.max()
        return shifted - math.log(np.exp(shifted).sum())

    def top(self, history: tuple[int, ...], k: int) -> list[tuple[int, float]]:
        lp = self.logprobs(history)
        order = np.argsort(-lp, kind="stable")[:k]
        return [(int(i), float(lp[i])) for i in order]

    def draw(self, history: tuple[int, ...], temperature: float, rng: np.random.Generator) -> int:
        logits = np.asarray(self.logits_fn(history), dtype=np.float64)
        if temperature == 0:
            return int(np.argmax(logits))
        z = logits / temperature
        p = np.exp(z - z.max())
        return int(rng.choice(len(p), p=p / p.sum()))


PROMPT_IDS = [101, 102, 103]
EOS = 7
HIGH = [0.24, 0.22, 0.20, 0.18, 0.16]  # H = 1.603 nats over the top 5
LOW = [0.96, 0.01, 0.01, 0.01, 0.01]  # H = 0.22 nats


def high_position(pos: int) -> bool:
    return pos % 6 == 3


class PositionScript:
    """Token ids in, token ids out; the token at completion position p is 1000 + p.

    At p with p % 6 == 3 the top-5 are nearly uniform (H = 1.60), elsewhere
    peaked (H = 0.22); candidate i at p is (i+1)*1000 + p, so a child's token
    at its fork is 2000 + p. ``end_at`` draws the end token there;
    ``eos_second_at`` makes it the top-2 there; ``draw_second_when_high``
    draws the top-2 token where the entropy is high (else always the top-1).
    """

    eos = EOS

    def __init__(self, *, end_at: int | None = None, eos_second_at: int | None = None, draw_second_when_high: bool = False) -> None:
        self.end_at = end_at
        self.eos_second_at = eos_second_at
        self.draw_second_when_high = draw_second_when_high

    def tokenize(self, text: str) -> list[int]:
        return list(PROMPT_IDS)

    def piece(self, token: int) -> str:
        return END_TEXT if token == EOS else f"<{token}>"

    def top(self, history: tuple[int, ...], k: int) -> list[tuple[int, float]]:
        pos = len(history) - len(PROMPT_IDS)
        ids = [(i + 1) * 1000 + pos for i in range(5)]
        if self.eos_second_at == pos:
            ids[1] = EOS
        return [(t, math.log(p)) for t, p in zip(ids, HIGH if high_position(pos) else LOW)][:k]

    def draw(self, history: tuple[int, ...], temperature: float, rng: np.random.Generator) -> int:
        pos = len(history) - len(PROMPT_IDS)
        if self.end_at == pos:
            return EOS
        return 2000 + pos if self.draw_second_when_high and high_position(pos) else 1000 + pos


class ScriptedServer:
    """The HTTP side: endpoints of one flavour, counters, failure knobs."""

    def __init__(
        self,
        script: Script,
        *,
        flavour: str = "vllm",
        owned_by: str | None = None,
        models: tuple[str, ...] = ("fake-model",),
        logprobs: bool = True,
        max_logprobs: int = 20,
        fail_first: int = 0,
        fail_status: int = 503,
        cut_once_after: int | None = None,
        die_after: int | None = None,
        stall_once_after: int | None = None,
        stall_s: float = 0.0,
        delay_s: float = 0.0,
        total_slots: int = 4,
    ) -> None:
        self.script = script
        self.flavour = flavour
        self.owned_by = owned_by or {"vllm": "vllm", "llama-server": "llamacpp"}[flavour]
        self.models = models
        self.logprobs = logprobs
        self.max_logprobs = max_logprobs
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.cut_once_after = cut_once_after
        self.die_after = die_after
        self.stall_once_after = stall_once_after
        self.stall_s = stall_s
        self.delay_s = delay_s
        self.total_slots = total_slots
        self.streams = 0  # streaming completion requests
        self.prompts: list[list[int]] = []  # their prompts
        self.bodies: list[dict] = []  # their bodies
        self.paths: dict[str, int] = {}  # requests per path
        self.authorization: set[str] = set()  # Authorization headers seen
        self.open_streams = 0
        self.peak_streams = 0

    # -- HTTP/1.1 ----------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, path, headers = _parse_head(head)
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                body = json.loads(raw) if raw else {}
                self.paths[path] = self.paths.get(path, 0) + 1
                self.authorization.add(headers.get("authorization", ""))
                if not await self.route(method, path, body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # (a cancelled handler ends quietly: asyncio's stream callback would log it)
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def route(self, method: str, path: str, body: dict, writer) -> bool:
        """Answer one request; False when the connection must close."""
        if method == "GET" and path == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": self.owned_by} for m in self.models]
            return await _json(writer, 200, {"object": "list", "data": data})
        if method == "POST" and path == "/v1/completions":
            return await self.completion(body, writer)
        answer = self.vllm_endpoint(method, path, body) if self.flavour == "vllm" else self.llama_endpoint(method, path, body)
        if answer is None:
            return await _json(writer, 404, {"detail": "Not Found"})
        return await _json(writer, 200, answer)

    def vllm_endpoint(self, method: str, path: str, body: dict) -> dict | None:
        if path == "/tokenize":
            text = _chat_text(body["messages"]) if "messages" in body else body["prompt"]
            return {"tokens": self.script.tokenize(text), "count": 0, "max_model_len": 4096}
        if path == "/detokenize":
            return {"prompt": "".join(self.script.piece(t) for t in body["tokens"])}
        if path == "/version" and self.owned_by == "vllm":
            return {"version": "0.0-scripted"}
        return None

    def llama_endpoint(self, method: str, path: str, body: dict) -> dict | None:
        if path == "/tokenize":
            return {"tokens": self.script.tokenize(body["content"])}
        if path == "/detokenize":
            return {"content": "".join(self.script.piece(t) for t in body["tokens"])}
        if path == "/apply-template":
            return {"prompt": _chat_text(body["messages"])}
        if path == "/props":
            return {"total_slots": self.total_slots, "bos_token": "", "eos_token": END_TEXT}
        return None

    # -- completions ---------------------------------------------------------------------

    async def completion(self, body: dict, writer) -> bool:
        k = body.get("logprobs") or 0
        if k > self.max_logprobs:
            message = f"Requested sample logprobs of {k}, which is greater than max allowed: {self.max_logprobs}"
            return await _json(writer, 400, {"object": "error", "message": message, "type": "BadRequestError", "code": 400})
        prompt = body["prompt"]
        history = list(prompt) if isinstance(prompt, list) else self.script.tokenize(prompt)
        if not body.get("stream"):  # the probes: one token
            token = self.script.draw(tuple(history), 0.0, np.random.default_rng(0))
            return await _json(writer, 200, self.chunk(tuple(history), token, k, finish="length"))
        self.streams += 1
        n = self.streams
        self.prompts.append(list(prompt) if isinstance(prompt, list) else prompt)
        self.bodies.append(body)
        cut, self.cut_once_after = self.cut_once_after, None
        stall, self.stall_once_after = self.stall_once_after, None
        if n <= self.fail_first:
            return await _json(writer, self.fail_status, {"error": {"message": f"scripted failure {self.fail_status}", "code": self.fail_status}})
        if self.die_after is not None and n > self.die_after:
            return await _json(writer, 503, {"message": "overloaded"})
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.open_streams += 1
        self.peak_streams = max(self.peak_streams, self.open_streams)
        try:
            return await self.stream(body, history, k, (cut, stall), writer)
        finally:
            self.open_streams -= 1

    async def stream(self, body: dict, history: list[int], k: int, faults: tuple, writer) -> bool:
        cut, stall = faults
        rng = np.random.default_rng(body.get("seed", 0))
        temperature = float(body.get("temperature", 1.0))
        finish = None
        for j in range(body["max_tokens"]):
            if cut is not None and j == cut:
                return False  # the connection drops: no finish reason, no [DONE]
            if stall is not None and j == stall:
                await asyncio.sleep(self.stall_s)  # silent: the client's read time-out should cut it
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            token = self.script.draw(tuple(history), temperature, rng)
            last = token == self.script.eos or j == body["max_tokens"] - 1
            finish = ("stop" if token == self.script.eos else "length") if last else None
            together = finish if self.flavour == "vllm" else None  # llama-server sends a final chunk of its own
            await _chunk(writer, self.chunk(tuple(history), token, k, finish=together))
            history.append(token)
            if last:
                break
        if self.flavour == "llama-server":
            final = {"choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}], "object": "text_completion"}
            final["usage"] = {"prompt_tokens": len(body["prompt"]), "prompt_tokens_details": {"cached_tokens": 0}}
            await _chunk(writer, final)
        await _send(writer, _sse_chunk("[DONE]") + b"0\r\n\r\n")
        return True

    def chunk(self, history: tuple[int, ...], token: int, k: int, *, finish: str | None) -> dict:
        top = self.script.top(history, k)
        if token not in dict(top):  # as vLLM does: the drawn token's own logprob comes along
            top = [*top, (token, dict(self.script.top(history, 1 << 20)).get(token, math.log(0.01)))]
        text = "" if token == self.script.eos else self.script.piece(token)
        choice: dict = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        if self.logprobs and self.flavour == "vllm":
            listed = {f"token_id:{t}": lp for t, lp in top}
            choice["logprobs"] = {"tokens": [f"token_id:{token}"], "token_logprobs": [dict(top)[token]], "top_logprobs": [listed], "text_offset": [0]}
        elif self.logprobs:
            entries = [self._entry(t, lp) for t, lp in top[:k]]
            choice["logprobs"] = {"content": [{**self._entry(token, dict(top)[token]), "top_logprobs": entries}]}
        return {"id": "cmpl-1", "object": "text_completion", "model": self.models[0], "choices": [choice]}

    def _entry(self, token: int, logprob: float) -> dict:
        text = "" if token == self.script.eos else self.script.piece(token)
        return {"id": token, "token": text, "bytes": list(text.encode()), "logprob": logprob}


def _chat_text(messages: list[dict]) -> str:
    return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, path, headers


async def _send(writer, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def _json(writer, status: int, body: dict) -> bool:
    raw = json.dumps(body).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}[status]
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
    await _send(writer, head.encode() + raw)
    return True


def _sse_chunk(data: str) -> bytes:
    payload = f"data: {data}\n\n".encode()
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


async def _chunk(writer, event: dict) -> None:
    await _send(writer, _sse_chunk(json.dumps(event)))


# -- running it ------------------------------------------------------------------------


@contextlib.contextmanager
def serving(server: ScriptedServer) -> Iterator[str]:
    """Serve in a background thread with its own event loop; yields ``http://127.0.0.1:PORT/v1``."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict = {}

    async def start() -> None:
        holder["server"] = await asyncio.start_server(server.handle, "127.0.0.1", 0, backlog=4096)
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    ready.wait(10)
    port = holder["server"].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        asyncio.run_coroutine_threadsafe(_shut(holder["server"]), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


async def _shut(listening: asyncio.AbstractServer) -> None:
    """Stop listening and end every connection's handler."""
    listening.close()
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each streamed token")
    parser.add_argument("--flavour", default="vllm", choices=("vllm", "llama-server"))
    args = parser.parse_args()

    serve_forever(ScriptedServer(PositionScript(), flavour=args.flavour, delay_s=args.delay), args.port)


def serve_forever(server, port: int) -> None:
    """Serve ``server`` (anything with an asyncio ``handle``) on 127.0.0.1:``port`` (0: any free one),
    printing "PORT <n>" first, until killed: the main of the server scripts tests start as processes."""

    async def run() -> None:
        listening = await asyncio.start_server(server.handle, "127.0.0.1", port, backlog=4096)
        print(f"PORT {listening.sockets[0].getsockname()[1]}", flush=True)
        async with listening:
            await listening.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
