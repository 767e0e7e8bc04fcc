"""EAGER over an OpenAI-compatible completions server (vLLM, SGLang, llama.cpp).

A remote server gives the top-K log-probabilities of each sampled token, not
the full logits a local :class:`~eager.backends.base.Backend` returns, so this
is a driver of its own. It reuses the engine's rules, not copies of them: the
same :class:`~eager.core.tree.Tree` and :class:`~eager.core.tree.Branch`
objects, the same strategy objects (``initial_branches`` / ``should_fork`` /
``after_step``), :func:`~eager.core.results.result_of` and the configs.

How a prompt is generated:

* a *segment* is one streaming ``/v1/completions`` request for one branch,
  over the prompt plus the branch's tokens so far, with ``logprobs=K`` and
  ``max_tokens`` = what the branch has left;
* every streamed token brings its top-K log-probabilities; H is the entropy
  renormalised over them (:func:`eager.core.entropy.entropy_from_logprobs`), so it is
  the paper's top-K entropy of the raw distribution where the server reports
  raw log-probabilities (see docs/remote.md for each server);
* when the strategy says fork, the stream is closed and the token the server
  sampled there is dropped: the parent goes on with the top-1 token and a new
  child with the top-2 token, each in a new request whose prefix the server's
  prefix cache already holds.

The rules are the brancher's (:func:`eager.core.brancher.advance`), called
once per received token. A token's step is its completion position, as in
the local engine (where every live branch of a tree is at the same position
in each batched step), so the window W counts steps of the tree on both paths.

Token ids where the server gives them (vLLM with ``return_tokens_as_token_ids``,
llama.cpp's ``llama-server``): prompts go out as ids, so a fork never
re-tokenises. Servers that stream token text only (llama-cpp-python, SGLang)
get text prompts that they re-tokenise; ids in the results are then mapped
back from each token's text (see :class:`PieceTable`).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlsplit

import numpy as np

from eager.core.config import BranchingConfig, SamplingConfig
from eager.engine import StepStats
from eager.core.entropy import entropy_from_logprobs
from eager.errors import EagerError
from eager.core.results import GenerationResult, result_of
from eager.core import brancher
from eager.core.tree import Branch, Status, Tree, TreeRequest, tokenized

log = logging.getLogger(__name__)

SPEC_PREFIX = "openai:"
# a streamed token whose text looks like one of these ends a sequence when forced at a fork
END_TOKEN_TEXT = re.compile(r"^(</s>|<\|?(end|eot|eos|im_end|endoftext|end_of_text|eot_id|return)[^<>]*\|?>|<end_of_turn>|<｜end▁of▁sentence｜>)$")
TOKEN_ID_TEXT = re.compile(r"^token_id:(-?\d+)$")
FALLBACK_TOP_K = 5  # asked for when the server refuses K and does not say its limit


# -- the model spec --------------------------------------------------------------------


def parse_remote_model(spec: str) -> tuple[str, str | None] | None:
    """``openai:http://HOST:PORT/v1[#served-name]`` -> (base url, served model name or None).

    Returns None for anything that is not an ``openai:`` spec (a packaged
    model name or a .gguf path), so callers can dispatch on it.
    """
    if not isinstance(spec, str) or not spec.startswith(SPEC_PREFIX):
        return None
    url, _, name = spec[len(SPEC_PREFIX) :].partition("#")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EagerError(f"bad remote model {spec!r}: expected openai:http://HOST:PORT/v1 (optionally #SERVED_MODEL)")
    try:
        parts.port
    except ValueError:
        raise EagerError(f"bad port in remote model {spec!r}") from None
    return url.rstrip("/"), (name or None)


# -- HTTP with time-outs and retries ---------------------------------------------------


class ServerError(EagerError):
    """The server answered with an error that retrying will not fix (a 4xx)."""

    def __init__(self, url: str, status: int, message: str) -> None:
        super().__init__(f"{url} answered {status}: {message}")
        self.status = status
        self.server_message = message


class _Transient(Exception):
    """A failure worth retrying: no connection, a time-out, a 5xx or 429, a cut stream."""


def _error_message(raw: bytes) -> str:
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


class EventStream:
    """Server-sent events of one streaming response, as parsed JSON objects.

    Iteration ends at ``data: [DONE]`` or when the server closes the stream;
    :meth:`close` drops the connection, which makes the server stop generating.
    """

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, url: str) -> None:
        self._conn = conn
        self._response = response
        self._url = url

    def __iter__(self) -> Iterator[dict]:
        data: list[str] = []
        while True:
            try:
                raw = self._response.readline()
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(f"stream from {self._url} broke: {exc!r}") from exc
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif not line and data:
                payload, data = "\n".join(data), []
                if payload.strip() == "[DONE]":
                    return
                yield self._event(payload)
        if data and "\n".join(data).strip() != "[DONE]":
            yield self._event("\n".join(data))

    def _event(self, payload: str) -> dict:
        try:
            event = json.loads(payload)
        except ValueError as exc:
            raise _Transient(f"unreadable event from {self._url}: {payload[:200]!r}") from exc
        if isinstance(event, dict) and "error" in event:
            err = event["error"]
            message = err.get("message", err) if isinstance(err, dict) else err
            code = err.get("code", 500) if isinstance(err, dict) else 500
            if isinstance(code, int) and 400 <= code < 500 and code != 429:
                raise ServerError(self._url, code, str(message))
            raise _Transient(f"{self._url} reported an error mid-stream: {message}")
        return event

    def close(self) -> None:
        self._conn.close()


class Http:
    """JSON over HTTP/1.1 with a socket time-out and retries with exponential back-off.

    Connection errors, time-outs, 429 and 5xx answers are retried ``retries``
    times, waiting backoff_s, 2*backoff_s, ... between tries; any other 4xx is
    a :class:`ServerError` at once.
    """

    def __init__(self, *, timeout_s: float, retries: int, backoff_s: float = 0.5, api_key: str | None = None) -> None:
        if timeout_s <= 0:
            raise EagerError(f"timeout must be > 0 s, got {timeout_s}")
        if retries < 0:
            raise EagerError(f"retries must be >= 0, got {retries}")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.api_key = api_key
        self.requests = 0
        self.retried = 0

    def _open(self, method: str, url: str, body: dict | None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        parts = urlsplit(url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=self.timeout_s)
        headers = {"Accept": "application/json, text/event-stream"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.requests += 1
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _Transient(f"cannot reach {url}: {exc!r}") from exc
        if response.status >= 400:
            message = _error_message(response.read())
            conn.close()
            if response.status == 429 or response.status >= 500:
                raise _Transient(f"{url} answered {response.status}: {message}")
            raise ServerError(url, response.status, message)
        return conn, response

    def once(self, method: str, url: str, body: dict | None = None) -> Any:
        """One request, no retry; the JSON answer."""
        conn, response = self._open(method, url, body)
        try:
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(f"reading the answer of {url} failed: {exc!r}") from exc
        finally:
            conn.close()
        try:
            return json.loads(raw)
        except ValueError:
            raise EagerError(f"{url} did not answer JSON: {raw[:200]!r}") from None

    def json(self, method: str, url: str, body: dict | None = None) -> Any:
        return self.retrying(lambda: self.once(method, url, body))

    def stream(self, url: str, body: dict) -> EventStream:
        conn, response = self._open("POST", url, body)
        return EventStream(conn, response, url)

    def retrying(self, call: Callable[[], Any]) -> Any:
        attempt = 0
        while True:
            try:
                return call()
            except _Transient as exc:
                attempt += 1
                if attempt > self.retries:
                    raise EagerError(f"{exc} (gave up after {self.retries} retries)") from None
                self.pause(attempt, exc)

    def pause(self, attempt: int, exc: Exception) -> None:
        self.retried += 1
        delay = self.backoff_s * 2 ** (attempt - 1)
        log.warning("%s; retry %d/%d in %.1f s", exc, attempt, self.retries, delay)
        time.sleep(delay)


# -- what one streamed token carries ---------------------------------------------------


class NoLogprobs(EagerError):
    pass


@dataclass(frozen=True)
class Candidate:
    """One of the top-K tokens of a step."""

    logprob: float
    text: str | None
    id: int | None = None
    empty_bytes: bool = False  # llama-server renders control tokens as no bytes at all


@dataclass(frozen=True)
class StreamedToken:
    text: str | None  # None where the server sent an id only
    id: int | None  # None where the server sent text only
    candidates: tuple[Candidate, ...]  # most probable first, at most K


def _id_or_text(token: str) -> tuple[int | None, str | None]:
    match = TOKEN_ID_TEXT.match(token)
    return (int(match.group(1)), None) if match else (None, token)


def _candidates(entries: Sequence[Candidate], k: int) -> tuple[Candidate, ...]:
    return tuple(sorted(entries, key=lambda c: -c.logprob)[:k])


def no_logprobs_error(url: str) -> NoLogprobs:
    return NoLogprobs(
        f"{url} returned completions without top-K logprobs, which EAGER needs for its entropy; "
        "enable them on the server (vLLM: --max-logprobs 20; llama-cpp-python: logits_all, the default) "
        "or use a server that supports `logprobs` on /v1/completions"
    )


def parse_choice(choice: dict, k: int, url: str) -> list[StreamedToken]:
    """The tokens of one completion choice, in either logprobs format.

    OpenAI's completions format (vLLM, SGLang, llama-cpp-python) has parallel
    lists ``tokens`` / ``top_logprobs`` (a dict text -> logprob per token);
    llama-server sends the chat format ``content: [{id, token, bytes, logprob,
    top_logprobs: [...]}]``. vLLM's ``token_id:N`` strings become ids.
    """
    logprobs = choice.get("logprobs")
    text = choice.get("text") or ""
    if not logprobs:
        if text:
            raise no_logprobs_error(url)
        return []
    if isinstance(logprobs.get("content"), list):
        return [_chat_format_token(entry, k, url) for entry in logprobs["content"]]
    tokens = logprobs.get("tokens") or []
    tops = logprobs.get("top_logprobs") or []
    if len(tops) < len(tokens) or any(not isinstance(t, dict) or not t for t in tops[: len(tokens)]):
        raise no_logprobs_error(url)
    out = []
    for token, top in zip(tokens, tops):
        token_id, token_text = _id_or_text(token)
        entries = []
        for key, lp in top.items():
            if lp is not None:
                key_id, key_text = _id_or_text(key)
                entries.append(Candidate(float(lp), key_text, key_id))
        out.append(StreamedToken(token_text, token_id, _candidates(entries, k)))
    if len(out) == 1 and out[0].text is None:  # vLLM with token ids: the chunk's text is that token's
        out[0] = StreamedToken(text, out[0].id, out[0].candidates)
    return out


def _chat_format_token(entry: dict, k: int, url: str) -> StreamedToken:
    top = entry.get("top_logprobs") or entry.get("top_probs")
    if not top:
        raise no_logprobs_error(url)
    entries = [
        Candidate(
            float(c["logprob"]) if "logprob" in c else float(np.log(max(c.get("prob", 0.0), 1e-45))),
            c.get("token"),
            c.get("id"),
            empty_bytes=c.get("bytes") == [],
        )
        for c in top
    ]
    return StreamedToken(entry.get("token"), entry.get("id"), _candidates(entries, k))


def token_entropy(token: StreamedToken) -> float:
    return float(entropy_from_logprobs(np.array([[c.logprob for c in token.candidates]]))[0])


# -- what each server supports -----------------------------------------------------------


class Dialect:
    """How one server family tokenises, detokenises and reports tokens.

    Attributes:
        name: shown in logs and errors.
        streams_ids: streamed tokens carry exact token ids.
        accepts_id_prompts: /v1/completions takes a list of token ids as prompt.
    """

    name = "openai"
    streams_ids = False
    accepts_id_prompts = False

    def __init__(self, server: "Server") -> None:
        self.server = server

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        raise EagerError(f"{self.name} has no tokenize endpoint eager knows")

    def chat_prompt_ids(self, user_text: str) -> list[int]:
        raise self._no_template()

    def prompt_text(self, user_text: str, chat: bool) -> str:
        """The prompt as text, for servers that get text prompts."""
        if chat:
            raise self._no_template()
        return user_text

    def _no_template(self) -> EagerError:
        return EagerError(
            f"the {self.name} cannot apply the model's chat template over HTTP; "
            "pass chat=False (--raw-prompt) and put the template in the prompt yourself"
        )

    def detokenize(self, ids: Sequence[int]) -> str:
        raise EagerError(f"{self.name} has no detokenize endpoint eager knows")

    def request_fields(self, cfg: SamplingConfig) -> dict:
        """Extra fields of every completion request: sampling knobs the server
        would otherwise default differently from the local engine, id reporting."""
        return {}

    def max_parallel(self) -> int | None:
        """Requests the server runs at once (more would only queue there), if known."""
        return None

    def _post(self, path: str, body: dict) -> Any:
        return self.server.http.json("POST", self.server.root + path, body)


class VllmDialect(Dialect):
    name = "vLLM"
    streams_ids = True  # with return_tokens_as_token_ids
    accepts_id_prompts = True

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        return self._post("/tokenize", {"model": self.server.model, "prompt": text, "add_special_tokens": add_special})["tokens"]

    def chat_prompt_ids(self, user_text: str) -> list[int]:
        body = {"model": self.server.model, "messages": [{"role": "user", "content": user_text}], "add_generation_prompt": True}
        return self._post("/tokenize", body)["tokens"]

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._post("/detokenize", {"model": self.server.model, "tokens": list(ids)})["prompt"]

    def request_fields(self, cfg: SamplingConfig) -> dict:
        # explicit values: vLLM otherwise applies the model's generation_config defaults
        return {"top_k": cfg.top_k or -1, "min_p": 0.0, "repetition_penalty": 1.0, "return_tokens_as_token_ids": True}


class SglangDialect(Dialect):
    name = "SGLang"
    accepts_id_prompts = True

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        return self._post("/tokenize", {"model": self.server.model, "prompt": text, "add_special_tokens": add_special})["tokens"]

    def request_fields(self, cfg: SamplingConfig) -> dict:
        return {"top_k": cfg.top_k or -1, "min_p": 0.0, "repetition_penalty": 1.0}


class LlamaServerDialect(Dialect):
    name = "llama.cpp llama-server"
    streams_ids = True
    accepts_id_prompts = True

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        return self._post("/tokenize", {"content": text, "add_special": add_special, "parse_special": parse_special})["tokens"]

    def chat_prompt_ids(self, user_text: str) -> list[int]:
        return self.tokenize(self.prompt_text(user_text, True), add_special=True, parse_special=True)

    def prompt_text(self, user_text: str, chat: bool) -> str:
        if not chat:
            return user_text
        return self._post("/apply-template", {"messages": [{"role": "user", "content": user_text}]})["prompt"]

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._post("/detokenize", {"tokens": list(ids)})["content"]

    def request_fields(self, cfg: SamplingConfig) -> dict:
        # llama-server samples with top_k=40 and min_p=0.05 unless told otherwise
        return {"top_k": cfg.top_k, "min_p": 0.0, "repeat_penalty": 1.0, "cache_prompt": True}

    def max_parallel(self) -> int | None:
        try:
            slots = self.server.http.json("GET", self.server.root + "/props").get("total_slots")
        except EagerError:
            return None
        return int(slots) if slots else None


class LlamaCppPythonDialect(Dialect):
    """llama-cpp-python's server: text prompts only, token text only, one request at a time."""

    name = "llama-cpp-python server"

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        # always parses special tokens and adds BOS when the model wants one
        return self._post("/extras/tokenize", {"input": text, "model": self.server.model})["tokens"]

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._post("/extras/detokenize", {"tokens": list(ids), "model": self.server.model})["text"]

    def request_fields(self, cfg: SamplingConfig) -> dict:
        # its defaults are top_k=40, min_p=0.05, repeat_penalty=1.1
        return {"top_k": cfg.top_k, "min_p": 0.0, "repeat_penalty": 1.0}

    def max_parallel(self) -> int | None:
        return 1  # it serves one request at a time; more would only queue (or interrupt) there


DIALECTS_BY_OWNER: dict[str, type[Dialect]] = {
    "vllm": VllmDialect,
    "sglang": SglangDialect,
    "llamacpp": LlamaServerDialect,
    "me": LlamaCppPythonDialect,  # llama-cpp-python's /v1/models says owned_by "me"
}


# -- token text <-> id where the server streams text only --------------------------------


class PieceTable:
    """Ids for streamed token text, for servers that send text only.

    While streaming, a piece not seen before gets a provisional negative id
    (no request is made mid-stream: a one-request-at-a-time server would
    stall). :meth:`resolve` then tokenises each new piece once; a piece that
    is exactly one token gets that id, others keep their negative id.
    """

    def __init__(self) -> None:
        self._id_of: dict[str, int] = {}
        self._piece_of: dict[int, str] = {}
        self._provisional: dict[int, str] = {}
        self._lock = threading.Lock()

    def id_for(self, piece: str) -> int:
        with self._lock:
            if piece not in self._id_of:
                provisional = -1 - len(self._provisional)
                self._provisional[provisional] = piece
                self._id_of[piece] = provisional
                self._piece_of[provisional] = piece
            return self._id_of[piece]

    def resolve(self, tokenize: Callable[[str], list[int]], prefix: list[int]) -> dict[int, int]:
        """Provisional id -> real id, for every piece that tokenises to one token."""
        mapping: dict[int, int] = {}
        for provisional, piece in list(self._provisional.items()):
            ids = tokenize(piece) if piece else []
            if ids[: len(prefix)] == prefix:
                ids = ids[len(prefix) :]
            if len(ids) == 1:
                mapping[provisional] = ids[0]
                with self._lock:
                    self._id_of[piece] = ids[0]
                    self._piece_of.setdefault(ids[0], piece)
                    del self._provisional[provisional]
        return mapping

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._piece_of.get(i, "") for i in ids)


# -- the server: probed once ----------------------------------------------------------


class Server:
    """One OpenAI-compatible server, probed once for what it supports.

    ``connect`` checks, in order: the served model exists; completions come
    with top-K logprobs (and K fits the server's limit, lowered if not); which
    server family answers; whether prompts can go out as token ids.
    """

    def __init__(self, url: str, served_model: str | None, http: Http) -> None:
        self.url = url
        self.root = url[: -len("/v1")] if url.endswith("/v1") else url
        self.http = http
        self.model = served_model
        self.dialect: Dialect = Dialect(self)
        self.top_k = 0
        self.id_prompts = False
        self.max_parallel: int | None = None
        self.pieces = PieceTable()
        self.tokenizer = RemoteTokenizer(self)
        self._piece_cache: dict[int, str] = {}
        self._models_answer: dict = {}

    def piece_text(self, token_id: int) -> str:
        """One token's text through the detokenize endpoint, cached."""
        if token_id not in self._piece_cache:
            self._piece_cache[token_id] = self.dialect.detokenize([token_id])
        return self._piece_cache[token_id]

    @property
    def completions_url(self) -> str:
        return self.url + "/completions"

    def connect(self, k: int) -> None:
        self._choose_model()
        self.top_k = self._probe_logprobs(k)
        self.dialect = self._detect_dialect()
        self.id_prompts = self._probe_id_prompts()
        self.max_parallel = self.dialect.max_parallel()
        log.info(
            "%s at %s: model %s, top-%d logprobs, %s prompts, %s",
            self.dialect.name,
            self.url,
            self.model,
            self.top_k,
            "token-id" if self.id_prompts else "text",
            f"at most {self.max_parallel} requests at once" if self.max_parallel else "no request limit known",
        )

    def _choose_model(self) -> None:
        answer = self.http.json("GET", self.url + "/models")
        self._models_answer = answer
        served = [m.get("id") for m in (answer.get("data") or []) if isinstance(m, dict)]
        if self.model is None:
            if len(served) != 1:
                raise EagerError(f"{self.url} serves {served or 'no models'}; name one with openai:{self.url}#NAME")
            self.model = served[0]
        elif self.model not in served:
            raise EagerError(f"{self.url} does not serve a model named {self.model!r}; it serves: {', '.join(map(str, served)) or 'nothing'}")

    def _probe_logprobs(self, k: int) -> int:
        """The K the server grants: ask for k; if refused, for the limit its error names (or 5)."""
        asked = k
        while True:
            body = {"model": self.model, "prompt": "Hello", "max_tokens": 1, "temperature": 0, "logprobs": asked}
            try:
                answer = self.http.retrying(lambda: self.http.once("POST", self.completions_url, body))
            except ServerError as exc:
                if "logprob" not in exc.server_message.lower() or asked <= 2:
                    raise
                limits = [int(n) for n in re.findall(r"\d+", exc.server_message) if 2 <= int(n) < asked]
                asked = max(limits) if limits else min(FALLBACK_TOP_K, asked - 1)
                log.warning("%s refused logprobs=%d: %s; asking for %d", self.url, body["logprobs"], exc.server_message, asked)
                continue
            choices = answer.get("choices") or [{}]
            tokens = parse_choice(choices[0], asked, self.url) if choices[0].get("logprobs") else []
            if not tokens or not tokens[0].candidates:
                raise no_logprobs_error(self.url)
            granted = min(asked, max(len(t.candidates) for t in tokens))
            if granted < 2:
                raise EagerError(f"{self.url} returns only {granted} logprob per token; a fork needs the top 2")
            if granted < k:
                log.warning("%s gives top-%d logprobs, not the %d asked: entropies are top-%d and thresholds differ", self.url, granted, k, granted)
            return granted

    def _detect_dialect(self) -> Dialect:
        owners = {str(m.get("owned_by", "")).lower() for m in self._models_answer.get("data") or [] if isinstance(m, dict)}
        for owner in owners:
            if owner in DIALECTS_BY_OWNER:
                return DIALECTS_BY_OWNER[owner](self)
        for cls, method, path, body in (
            (LlamaCppPythonDialect, "POST", "/extras/tokenize", {"input": "a", "model": self.model}),
            (LlamaServerDialect, "GET", "/props", None),
            (VllmDialect, "GET", "/version", None),
        ):
            try:
                self.http.once(method, self.root + path, body)
                return cls(self)
            except (EagerError, _Transient):
                continue
        raise EagerError(
            f"cannot tell which server answers at {self.url} (owned_by {sorted(owners)}); "
            "eager supports vLLM, SGLang, llama.cpp's llama-server and llama-cpp-python's server"
        )

    def _probe_id_prompts(self) -> bool:
        dialect = self.dialect
        if not (dialect.streams_ids and dialect.accepts_id_prompts):
            log.warning(
                "%s streams token text, not ids: prompts go out as text and the server re-tokenises "
                "every prefix (token boundaries can drift); result token ids are mapped back from text",
                dialect.name,
            )
            return False
        ids = dialect.tokenize("Hello", add_special=True, parse_special=False)
        body = {"model": self.model, "prompt": ids, "max_tokens": 1, "temperature": 0}
        try:
            self.http.retrying(lambda: self.http.once("POST", self.completions_url, body))
        except ServerError as exc:
            log.warning("%s refused a token-id prompt (%s); sending text prompts", self.url, exc.server_message)
            return False
        return True


class RemoteTokenizer:
    """The Tokenizer protocol over the server's endpoints (text at the edges)."""

    eog_ids: frozenset[int] = frozenset()

    def __init__(self, server: Server) -> None:
        self.server = server

    def encode_prompt(self, text: str, chat: bool) -> list[int]:
        dialect = self.server.dialect
        if chat:
            return dialect.chat_prompt_ids(text)
        return dialect.tokenize(text, add_special=True, parse_special=False)

    def encode_marker(self, text: str) -> list[list[int]]:
        return []  # the remote driver checks the end-of-thinking marker on text

    def decode(self, token_ids: Sequence[int]) -> str:
        if self.server.dialect.streams_ids and all(t >= 0 for t in token_ids):
            return self.server.dialect.detokenize(token_ids) if token_ids else ""
        return self.server.pieces.decode(token_ids)


# -- the driver ---------------------------------------------------------------------


class RemoteGenerationError(EagerError):
    """Generation stopped (server gone after retries, or a hard error).

    ``results`` holds one entry per prompt: the finished ones, None for the rest.
    """

    def __init__(self, message: str, results: list[GenerationResult | None]) -> None:
        super().__init__(message)
        self.results = results


@dataclass
class RemoteStats:
    """What the server computed beyond the tokens a result counts."""

    requests: int = 0  # completion requests (segments), retries included
    streamed_tokens: int = 0  # tokens received, the ones dropped at forks included
    prompt_tokens_sent: int = 0  # prompt + prefix tokens of all requests (id prompts only)
    retries: int = 0


@dataclass(eq=False)
class _Job:
    """A prompt's tree with the driver's bookkeeping."""

    position: int
    tree: Tree
    prompt_text: str
    texts: dict[Branch, str] = field(default_factory=dict)
    in_flight: int = 0
    request_s: float = 0.0  # summed duration of its requests


class _StreamRow:
    """A received token as a brancher row: the server's token is plain sampling's."""

    def __init__(self, driver: "RemoteDriver", branch: Branch, token: StreamedToken) -> None:
        self.branch = branch
        self.entropy = token_entropy(token)
        self._driver = driver
        self.sampled = driver._token_id(token)
        self.candidates = token.candidates
        self.pieces: dict[int, str] = {self.sampled: token.text or ""}  # token id -> its text, for this step
        self.end_ids: set[int] = set()

    def sample(self) -> int:
        return self.sampled

    def top_two(self) -> tuple[int, int]:
        ids = []
        for candidate in self.candidates[:2]:
            token_id = self._driver._candidate_id(candidate)
            if self._driver._ends_sequence(candidate):
                self.end_ids.add(token_id)
            else:
                self.pieces[token_id] = self._driver._candidate_text(candidate)
            ids.append(token_id)
        return ids[0], ids[1]


class _StreamDriver:
    """The brancher's side effects for one received token: no cache to fork or free."""

    def __init__(self, job: "_Job", row: _StreamRow) -> None:
        self._job = job
        self._row = row

    def text_after(self, tree: Tree, branch: Branch, base: str) -> str:
        return base + self._row.pieces.get(branch.token_ids[-1], "") if branch.token_ids else base

    def base_text(self, tree: Tree, branch: Branch) -> str:
        texts = self._job.texts
        return texts[branch] if branch in texts else texts[tree.branches[branch.parent]]

    def fork_sequence(self, parent: Branch) -> int | None:
        return None

    def is_end(self, token: int) -> bool:
        return token in self._row.end_ids  # only a token forced at a fork; the server ends its own

    def ends_thinking(self, tree: Tree, branch: Branch) -> bool:
        marker = tree.request.branching.end_of_thinking
        text = self.text_after(tree, branch, self.base_text(tree, branch))
        return marker in text[-(len(marker) + 64) :]

    def release(self, branch: Branch) -> None:
        return None


class RemoteDriver:
    """Runs requests to completion on a server; one streaming request per branch segment."""

    def __init__(
        self,
        server: Server,
        *,
        max_concurrency: int = 16,
        on_step: Callable[[StepStats], None] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise EagerError(f"max-concurrency must be >= 1, got {max_concurrency}")
        self.server = server
        self.concurrency = min(max_concurrency, server.max_parallel or max_concurrency)
        self.on_step = on_step
        self.stats = RemoteStats()
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self._steps = 0

    # -- the loop --------------------------------------------------------------------

    def run(self, requests: Sequence[TreeRequest], prompt_texts: Sequence[str] | None = None) -> list[GenerationResult]:
        """Generate for every request; ``prompt_texts`` are what text-prompt servers get."""
        texts = prompt_texts if prompt_texts is not None else [r.prompt for r in requests]
        jobs = [_Job(i, Tree(r, brancher.get_method(r.method)), text) for i, (r, text) in enumerate(zip(requests, texts))]
        start = time.perf_counter()
        failure: BaseException | None = None
        futures: dict[Future, _Job] = {}
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="eager-remote") as pool:

            def submit(job: _Job, branch: Branch) -> None:
                job.in_flight += 1
                futures[pool.submit(self._segment, job, branch)] = job

            for job in jobs:
                job.tree.status = Status.RUNNING
                job.tree.started_at = time.perf_counter()
                for _ in range(job.tree.method.initial_branches(job.tree)):
                    branch = job.tree.new_branch([], [])
                    job.texts[branch] = ""
                    submit(job, branch)
            while futures:
                try:
                    done, _ = wait(list(futures), timeout=0.5, return_when=FIRST_COMPLETED)
                except BaseException:  # Ctrl-C: let running streams close, then leave
                    self._abort.set()
                    raise
                for future in done:
                    job = futures.pop(future)
                    job.in_flight -= 1
                    try:
                        restarts = future.result()
                    except BaseException as exc:  # noqa: BLE001 - reported below with what finished
                        if failure is None:
                            failure = exc
                            self._abort.set()
                        continue
                    if failure is None:
                        for branch in restarts:
                            submit(job, branch)
                    if job.in_flight == 0 and not job.tree.live and job.tree.status is not Status.FINISHED:
                        job.tree.status = Status.FINISHED
                        job.tree.finished_at = time.perf_counter()
                self._report(jobs, start)
        self.stats.retries = self.server.http.retried
        results = self._results(jobs, time.perf_counter() - start)
        if failure is not None:
            done = sum(r is not None for r in results)
            message = str(failure) if isinstance(failure, EagerError) else f"{type(failure).__name__}: {failure}"
            raise RemoteGenerationError(f"{message} ({done} of {len(jobs)} prompts finished; see .results)", results) from failure
        return results  # type: ignore[return-value]

    def _report(self, jobs: list[_Job], start: float) -> None:
        if not self.on_step:
            return
        with self._lock:
            stats = StepStats(
                steps=self._steps,
                prompts_done=sum(j.tree.status is Status.FINISHED for j in jobs),
                prompts_in_flight=sum(j.tree.status is Status.RUNNING for j in jobs),
                live_branches=sum(len(j.tree.live) for j in jobs),
                generated_tokens=sum(j.tree.generated_tokens for j in jobs),
                elapsed_s=time.perf_counter() - start,
            )
        self.on_step(stats)

    def _results(self, jobs: list[_Job], wall_s: float) -> list[GenerationResult | None]:
        """Finished trees as results; each prompt's wall_s is its share of the run by request time."""
        finished = [j for j in jobs if j.tree.status is Status.FINISHED]
        if finished and not self.server.id_prompts:
            self._resolve_pieces(finished)
        total = sum(j.request_s for j in jobs) or 1.0
        out: list[GenerationResult | None] = [None] * len(jobs)
        for job in finished:
            job.tree.compute_s = wall_s * job.request_s / total
            out[job.position] = result_of(job.tree, self.server.tokenizer.decode)
        return out

    def _resolve_pieces(self, jobs: list[_Job]) -> None:
        dialect = self.server.dialect
        prefix = dialect.tokenize("", add_special=True, parse_special=False)  # a BOS some endpoints add
        mapping = self.server.pieces.resolve(lambda piece: dialect.tokenize(piece, add_special=False, parse_special=False), prefix)
        for job in jobs:
            for branch in job.tree.branches:
                branch.token_ids[:] = [mapping.get(t, t) for t in branch.token_ids]

    # -- one segment: a streaming request for one branch -----------------------------

    def _segment(self, job: _Job, branch: Branch) -> list[Branch]:
        """Stream one branch until it finishes or forks; the branches to restart."""
        http = self.server.http
        failures = 0
        while not self._abort.is_set():
            streamed = 0
            started = time.perf_counter()
            try:
                stream = http.stream(self.server.completions_url, self._body(job, branch))
                with self._lock:
                    self.stats.requests += 1
                try:
                    for event in stream:
                        choice = (event.get("choices") or [{}])[0]
                        for token in parse_choice(choice, self.server.top_k, self.server.url):
                            streamed += 1
                            outcome = self._on_token(job, branch, token)
                            if outcome is not None:
                                return outcome
                            if self._abort.is_set():
                                return []
                        reason = choice.get("finish_reason")
                        if reason:
                            with self._lock:
                                self._finish_from_server(branch, reason, streamed)
                            return []
                finally:
                    stream.close()
                    with self._lock:
                        job.request_s += time.perf_counter() - started
                raise _Transient(f"stream from {self.server.url} ended without a finish reason (interrupted?)")
            except _Transient as exc:
                failures = 0 if streamed else failures + 1
                if failures > http.retries:
                    raise EagerError(f"{exc} (gave up after {http.retries} retries)") from None
                http.pause(max(failures, 1), exc)
        return []

    def _body(self, job: _Job, branch: Branch) -> dict:
        request = job.tree.request
        cfg = request.sampling
        if self.server.id_prompts:
            prompt: list[int] | str = [*request.prompt_ids, *branch.token_ids]
            self.stats.prompt_tokens_sent += len(prompt)
        else:
            prompt = job.prompt_text + job.texts[branch]
        seed = int(branch.rng.integers(0, 2**31 - 1))  # one draw per request: the same seed, the same tree
        return {
            "model": self.server.model,
            "prompt": prompt,
            "max_tokens": cfg.max_tokens - len(branch.token_ids),
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "seed": seed,
            "logprobs": self.server.top_k,
            "stream": True,
            **self.server.dialect.request_fields(cfg),
        }

    # -- the rules, per received token ---------------------------------------------

    def _on_token(self, job: _Job, branch: Branch, token: StreamedToken) -> list[Branch] | None:
        """Fork, or keep the server's token. Returns the branches to restart, or None to go on."""
        if not token.candidates:
            raise no_logprobs_error(self.server.url)
        tree = job.tree
        row = _StreamRow(self, branch, token)
        driver = _StreamDriver(job, row)
        with self._lock:
            self._steps += 1
            self.stats.streamed_tokens += 1
            before = tree.n_sequences
            base = job.texts[branch]
            if len(token.candidates) < 2:  # no top-2 to fork with: keep the server's token
                brancher.append(tree, branch, row.sample(), row.entropy, driver)
                tree.method.after_step(tree, [row.entropy])
            else:
                brancher.advance(tree, [row], driver)
            touched = [branch, *tree.branches[before:]]
            for b in touched:
                job.texts[b] = driver.text_after(tree, b, base) if not (b.finished and b.finish_reason == "stop") else base
            if tree.n_sequences > before:
                return [b for b in touched if not b.finished]
            return [] if branch.finished else None

    def _finish_from_server(self, branch: Branch, reason: str, streamed: int) -> None:
        """The server ended the stream: "stop" (end of sequence) or "length"."""
        if branch.finished:
            return
        branch.finish_reason = "stop" if reason == "stop" else "length"
        # some servers stream the end-of-sequence token itself; a sequence does not hold it
        if reason == "stop" and streamed > 0 and self._is_end_id(branch.token_ids[-1]):
            branch.token_ids.pop()
            branch.entropies.pop()

    # -- ids and texts ---------------------------------------------------------------

    def _token_id(self, token: StreamedToken) -> int:
        if self.server.id_prompts and token.id is not None:
            return int(token.id)
        return self.server.pieces.id_for(token.text or "")

    def _candidate_id(self, candidate: Candidate) -> int:
        if self.server.id_prompts and candidate.id is not None:
            return int(candidate.id)
        return self.server.pieces.id_for(candidate.text or "")

    def _candidate_text(self, candidate: Candidate) -> str:
        if candidate.text is not None:
            return candidate.text
        if candidate.id is not None and self.server.dialect.streams_ids:
            return self.server.piece_text(candidate.id)  # vLLM sends "token_id:N" only
        return ""

    def _ends_sequence(self, candidate: Candidate) -> bool:
        """Whether a token forced at a fork ends the sequence (end-of-generation).

        Servers do not list their end-of-generation ids, so this goes by the
        token's text: a known end marker, or a token rendered as nothing
        (llama-server gives such control tokens no bytes; text-only servers
        render special tokens as empty text).
        """
        if candidate.empty_bytes:
            return True
        text = self._candidate_text(candidate)
        return bool(END_TOKEN_TEXT.match(text)) or (text == "" and not self.server.id_prompts)

    def _is_end_id(self, token_id: int) -> bool:
        if self.server.id_prompts and token_id >= 0:
            return bool(END_TOKEN_TEXT.match(self.server.piece_text(token_id)))
        return False


# -- the entry point ---------------------------------------------------------------


def connect(
    url: str,
    served_model: str | None = None,
    *,
    entropy_top_k: int = 20,
    timeout_s: float = 60.0,
    retries: int = 3,
    backoff_s: float = 0.5,
) -> Server:
    """Probe a server once (model, logprobs limit, server family, token-id prompts)."""
    http = Http(timeout_s=timeout_s, retries=retries, backoff_s=backoff_s, api_key=os.environ.get("OPENAI_API_KEY"))
    server = Server(url.rstrip("/"), served_model, http)
    server.connect(entropy_top_k)
    return server


def generate_remote(
    requests: Sequence[TreeRequest],
    *,
    url: str,
    served_model: str | None = None,
    max_concurrency: int = 16,
    timeout_s: float = 60.0,
    retries: int = 3,
    backoff_s: float = 0.5,
    on_step: Callable[[StepStats], None] | None = None,
    server: Server | None = None,
) -> list[GenerationResult]:
    """Generate for every prompt on an OpenAI-compatible server.

    Returns one :class:`GenerationResult` per prompt, in order. Raises
    :class:`EagerError` on bad input or a server that cannot do EAGER (no
    logprobs, unknown model, unreachable after ``retries``); if the server
    fails mid-run, :class:`RemoteGenerationError` carries every finished result.
    Pass ``server`` (from :func:`connect`) to skip probing it again.
    """
    if not requests:
        raise EagerError("no prompts given")
    if max_concurrency < 1:
        raise EagerError(f"max_concurrency must be >= 1, got {max_concurrency}")
    for request in requests:
        brancher.get_method(request.method)
        if request.branching.entropy != "topk":
            raise EagerError("a remote server gives top-K logprobs only: use entropy topk (full-vocabulary entropy needs a local model)")
    if server is None:
        k = requests[0].branching.entropy_top_k
        server = connect(url, served_model, entropy_top_k=k, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
    texts = None if server.id_prompts else [server.dialect.prompt_text(r.prompt, r.chat) for r in requests]
    requests = [tokenized(r, server.tokenizer) for r in requests]
    driver = RemoteDriver(server, max_concurrency=max_concurrency, on_step=on_step)
    results = driver.run(requests, texts)
    log.info("remote run: %s", driver.stats)
    return results
