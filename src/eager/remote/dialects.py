"""What each server family supports beyond OpenAI's ``/v1/completions``.

A :class:`Dialect` says how a family tokenises and detokenises, whether it
streams token ids and takes token-id prompts, how it applies the model's
chat template (if it can), which sampling fields it needs so that it samples
as the local engine does, and how many requests it runs at once.

=====================  =========  ===========  ======================  ==========
family                 ids out    id prompts   chat template           at once
=====================  =========  ===========  ======================  ==========
vLLM                   yes        yes          ``/tokenize`` messages  many
SGLang                 no         yes          none                    many
llama.cpp llama-server yes        yes          ``/apply-template``     its slots
llama-cpp-python       no         no           none                    1
=====================  =========  ===========  ======================  ==========
"""

from __future__ import annotations

from typing import Any, Sequence

from eager.core.config import SamplingConfig
from eager.errors import EagerError
from eager.remote.http import BadAnswer, Http


class Dialect:
    """A server family. Attributes:

    name: shown in logs and errors.
    streams_ids: streamed tokens carry exact token ids.
    accepts_id_prompts: ``/v1/completions`` takes a list of token ids as prompt.
    """

    name = "OpenAI-compatible server"
    streams_ids = False
    accepts_id_prompts = False

    def __init__(self, root: str, model: str | None) -> None:
        self.root = root  # the server's address without /v1, for its own endpoints
        self.model = model

    async def tokenize(self, http: Http, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        raise EagerError(f"the {self.name} has no tokenize endpoint eager knows")

    async def detokenize(self, http: Http, ids: Sequence[int]) -> str:
        raise EagerError(f"the {self.name} has no detokenize endpoint eager knows")

    async def chat_text(self, http: Http, user_text: str) -> str | None:
        """The prompt wrapped in the model's chat template by the server, or None if it cannot."""
        return None

    async def chat_ids(self, http: Http, user_text: str) -> list[int] | None:
        """The templated prompt as token ids, or None if the server cannot template."""
        text = await self.chat_text(http, user_text)
        if text is None:
            return None
        return await self.tokenize(http, text, add_special=True, parse_special=True)

    def request_fields(self, cfg: SamplingConfig) -> dict:
        """Extra fields of every completion request: sampling knobs the server
        would otherwise default differently from the local engine, id reporting."""
        return {}

    async def max_parallel(self, http: Http) -> int | None:
        """Requests the server runs at once (more would only queue there), if known."""
        return None

    async def _post(self, http: Http, path: str, body: dict) -> Any:
        return await http.json("POST", self.root + path, body)

    async def _ids(self, http: Http, path: str, body: dict, key: str = "tokens") -> list[int]:
        """A list of token ids under ``key`` in the answer of ``path``."""
        ids = field_of(await self._post(http, path, body), key, self.root + path)
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise BadAnswer(f"the server at {self.root + path} sent {key} that are not a list of token ids: {str(ids)[:80]}")
        return ids

    async def _text(self, http: Http, path: str, body: dict, key: str) -> str:
        """The string under ``key`` in the answer of ``path``."""
        text = field_of(await self._post(http, path, body), key, self.root + path)
        if not isinstance(text, str):
            raise BadAnswer(f"the server at {self.root + path} sent a {key} that is not a string: {str(text)[:80]}")
        return text


def field_of(answer: Any, key: str, url: str) -> Any:
    """``answer[key]`` of a JSON object, or a :class:`BadAnswer` naming the server."""
    if not isinstance(answer, dict) or key not in answer:
        raise BadAnswer(f"the server at {url} sent an answer without {key!r}: {str(answer)[:80]}")
    return answer[key]


class VllmDialect(Dialect):
    name = "vLLM server"
    streams_ids = True  # with return_tokens_as_token_ids
    accepts_id_prompts = True

    async def tokenize(self, http: Http, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        body = {"model": self.model, "prompt": text, "add_special_tokens": add_special}
        return await self._ids(http, "/tokenize", body)

    async def chat_ids(self, http: Http, user_text: str) -> list[int] | None:
        body = {"model": self.model, "messages": [{"role": "user", "content": user_text}], "add_generation_prompt": True}
        return await self._ids(http, "/tokenize", body)

    async def detokenize(self, http: Http, ids: Sequence[int]) -> str:
        return await self._text(http, "/detokenize", {"model": self.model, "tokens": list(ids)}, "prompt")

    def request_fields(self, cfg: SamplingConfig) -> dict:
        # explicit values: vLLM otherwise applies the model's generation_config defaults
        return {"top_k": cfg.top_k or -1, "min_p": 0.0, "repetition_penalty": 1.0, "return_tokens_as_token_ids": True}


class SglangDialect(Dialect):
    name = "SGLang server"
    accepts_id_prompts = True

    async def tokenize(self, http: Http, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        body = {"model": self.model, "prompt": text, "add_special_tokens": add_special}
        return await self._ids(http, "/tokenize", body)

    def request_fields(self, cfg: SamplingConfig) -> dict:
        return {"top_k": cfg.top_k or -1, "min_p": 0.0, "repetition_penalty": 1.0}


class LlamaServerDialect(Dialect):
    name = "llama.cpp llama-server"
    streams_ids = True
    accepts_id_prompts = True

    async def tokenize(self, http: Http, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        body = {"content": text, "add_special": add_special, "parse_special": parse_special}
        return await self._ids(http, "/tokenize", body)

    async def chat_text(self, http: Http, user_text: str) -> str | None:
        return await self._text(http, "/apply-template", {"messages": [{"role": "user", "content": user_text}]}, "prompt")

    async def detokenize(self, http: Http, ids: Sequence[int]) -> str:
        return await self._text(http, "/detokenize", {"tokens": list(ids)}, "content")

    def request_fields(self, cfg: SamplingConfig) -> dict:
        # llama-server samples with top_k=40 and min_p=0.05 unless told otherwise
        return {"top_k": cfg.top_k, "min_p": 0.0, "repeat_penalty": 1.0, "cache_prompt": True}

    async def max_parallel(self, http: Http) -> int | None:
        try:
            answer = await http.json("GET", self.root + "/props")
        except EagerError:
            return None
        slots = answer.get("total_slots") if isinstance(answer, dict) else None
        return slots if isinstance(slots, int) and not isinstance(slots, bool) and slots > 0 else None


class LlamaCppPythonDialect(Dialect):
    """llama-cpp-python's server: text prompts only, token text only, one request at a time."""

    name = "llama-cpp-python server"

    async def tokenize(self, http: Http, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        # always parses special tokens and adds BOS when the model wants one
        return await self._ids(http, "/extras/tokenize", {"input": text, "model": self.model})

    async def detokenize(self, http: Http, ids: Sequence[int]) -> str:
        return await self._text(http, "/extras/detokenize", {"tokens": list(ids), "model": self.model}, "text")

    def request_fields(self, cfg: SamplingConfig) -> dict:
        # its defaults are top_k=40, min_p=0.05, repeat_penalty=1.1
        return {"top_k": cfg.top_k, "min_p": 0.0, "repeat_penalty": 1.0}

    async def max_parallel(self, http: Http) -> int | None:
        return 1  # it serves one request at a time; more would only queue (or interrupt) there


DIALECTS_BY_OWNER: dict[str, type[Dialect]] = {
    "vllm": VllmDialect,
    "sglang": SglangDialect,
    "llamacpp": LlamaServerDialect,
    "me": LlamaCppPythonDialect,  # llama-cpp-python's /v1/models says owned_by "me"
}

# Tried in order when owned_by names no family: (dialect, method, path, body or None).
PROBES: tuple[tuple[type[Dialect], str, str, dict | None], ...] = (
    (LlamaCppPythonDialect, "POST", "/extras/tokenize", {"input": "a"}),
    (LlamaServerDialect, "GET", "/props", None),
    (VllmDialect, "GET", "/version", None),
)
