"""One OpenAI-compatible server, probed once; prompts made ready for it.

:func:`connect` checks, in order: the served model exists (``GET /v1/models``);
completions come with top-K log-probabilities, and K fits the server's limit
(lowered, with a warning, when the server names a smaller one); which family
answers (:mod:`eager.remote.dialects`); whether prompts can go out as token ids.
The :class:`Server` it returns is reused by every later run.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from eager.core.tree import TreeRequest
from eager.errors import EagerError
from eager.remote.dialects import DIALECTS_BY_OWNER, PROBES, Dialect
from eager.remote.credentials import Credentials, redact, split_credentials
from eager.remote.http import DEFAULT_READ_TIMEOUT_S, DEFAULT_TIMEOUT_S, BadAnswer, Http, HttpConfig, ServerError, Transient, run_sync
from eager.remote.logprobs import first_choice, no_logprobs_error, parse_choice
from eager.remote.templates import ChatTemplate, NoChatTemplate, load_chat_template
from eager.remote.vocab import Vocab

log = logging.getLogger(__name__)

SPEC_PREFIX = "openai:"
FALLBACK_TOP_K = 5  # asked for when the server refuses K and does not say its limit


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
        raise EagerError(f"bad remote model {redact(spec)!r}: expected openai:http://HOST:PORT/v1 (optionally #SERVED_MODEL)")
    try:
        parts.port
    except ValueError:
        raise EagerError(f"bad port in remote model {redact(spec)!r}") from None
    return url.rstrip("/"), (name or None)


class Server:
    """One server and what it supports, found out once by :meth:`probe`.

    Attributes:
        url: the ``/v1`` base; ``root`` is the address of its own endpoints.
        model: the served model's name.
        top_k: K of the top-K log-probabilities it grants.
        dialect: its family (:class:`~eager.remote.dialects.Dialect`).
        id_prompts: prompts go out as token ids (else as text).
        max_parallel: requests it runs at once, where known.
        chat_template: a template rendered here (option ``chat_template``), or None.
        vocab: its tokens' ids and texts (after probing).
    """

    def __init__(self, url: str, served_model: str | None, http_config: HttpConfig, chat_template: ChatTemplate | None = None) -> None:
        url, credentials = split_credentials(url.rstrip("/"))
        self.url = url  # without credentials: it names the server in every message
        self.root = self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url
        self.http_config = with_credentials(http_config, credentials)
        self.model = served_model
        self.chat_template = chat_template
        self.dialect = Dialect(self.root, served_model)
        self.top_k = 0
        self.id_prompts = False
        self.max_parallel: int | None = None
        self.vocab: Vocab | None = None

    @property
    def completions_url(self) -> str:
        return self.url + "/completions"

    @property
    def probed(self) -> bool:
        return self.vocab is not None

    async def probe(self, http: Http, k: int) -> None:
        served = await self._served_models(http)
        self.top_k = await self._probe_logprobs(http, k)
        self.dialect = await self._detect_dialect(http, served)
        self.id_prompts = await self._probe_id_prompts(http)
        self.max_parallel = await self.dialect.max_parallel(http)
        self.vocab = Vocab(self.dialect, self.id_prompts)
        log.info(
            "%s at %s: model %s, top-%d logprobs, %s prompts, %s",
            self.dialect.name, self.url, self.model, self.top_k, "token-id" if self.id_prompts else "text",
            f"at most {self.max_parallel} requests at once" if self.max_parallel else "no request limit known",
        )  # fmt: skip

    # -- prompts in ---------------------------------------------------------------------

    async def prompt(self, http: Http, request: TreeRequest, template: ChatTemplate | None = None) -> tuple[list[int], str]:
        """(prompt ids, prompt text) of a request: the chat template applied when it asks for one.

        The template is ``template`` (or the server's ``chat_template``)
        rendered here when given, else the server's own. Id servers need no
        text; text servers get the ids only to count the prompt.
        """
        dialect = self.dialect
        template = template or self.chat_template
        if not request.chat:
            return await dialect.tokenize(http, request.prompt, add_special=True, parse_special=False), request.prompt
        if template is not None:
            text = template.render(request.prompt)
            return await dialect.tokenize(http, text, add_special=True, parse_special=True), text
        if self.id_prompts and (ids := await dialect.chat_ids(http, request.prompt)) is not None:
            return ids, ""
        text = await dialect.chat_text(http, request.prompt)
        if text is None:
            raise NoChatTemplate(
                f"the {dialect.name} at {self.url} cannot apply the model's chat template over HTTP; pass chat_template "
                "(the model's .gguf file or a Jinja template file), or chat=False with the template written into the prompt"
            )
        return await dialect.tokenize(http, text, add_special=True, parse_special=True), text

    # -- probes ---------------------------------------------------------------------------

    async def _served_models(self, http: Http) -> list[dict]:
        answer = await http.json("GET", self.url + "/models")
        listed = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(listed, list):
            raise BadAnswer(f"the server at {self.url}/models sent no list of models under 'data': {str(answer)[:80]}")
        data = [m for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)]
        served = [m["id"] for m in data]
        if self.model is None:
            if len(served) != 1:
                raise EagerError(f"{self.url} serves {served or 'no models'}; name one with openai:{self.url}#NAME")
            self.model = served[0]
        elif self.model not in served:
            raise EagerError(f"{self.url} does not serve a model named {self.model!r}; it serves: {', '.join(map(str, served)) or 'nothing'}")
        return data

    async def _probe_logprobs(self, http: Http, k: int) -> int:
        """The K the server grants: ask for k; if refused, for the limit its error names (or 5)."""
        asked = k
        while True:
            body = {"model": self.model, "prompt": "Hello", "max_tokens": 1, "temperature": 0, "logprobs": asked}
            try:
                answer = await http.json("POST", self.completions_url, body)
            except ServerError as exc:
                if "logprob" not in exc.server_message.lower() or asked <= 2:
                    raise
                limits = [int(n) for n in re.findall(r"\d+", exc.server_message) if 2 <= int(n) < asked]
                asked = max(limits) if limits else min(FALLBACK_TOP_K, asked - 1)
                log.warning("%s refused logprobs=%d: %s; asking for %d", self.url, body["logprobs"], exc.server_message, asked)
                continue
            return self._granted(answer, asked, k)

    def _granted(self, answer: Any, asked: int, k: int) -> int:
        if not isinstance(answer, dict):
            raise BadAnswer(f"the server at {self.completions_url} sent a completion that is not a JSON object: {str(answer)[:80]}")
        choice = first_choice(answer, self.completions_url)
        tokens = parse_choice(choice, asked, self.url) if choice.get("logprobs") else []
        if not tokens or not tokens[0].candidates:
            raise no_logprobs_error(self.url)
        granted = min(asked, max(len(t.candidates) for t in tokens))
        if granted < 2:
            raise EagerError(f"{self.url} returns only {granted} logprob per token; a fork needs the top 2")
        if granted < k:
            log.warning("%s gives top-%d logprobs, not the %d asked: entropies are top-%d and thresholds differ", self.url, granted, k, granted)
        return granted

    async def _detect_dialect(self, http: Http, served: list[dict]) -> Dialect:
        owners = {str(m.get("owned_by", "")).lower() for m in served}
        for owner in sorted(owners):
            if owner in DIALECTS_BY_OWNER:
                return DIALECTS_BY_OWNER[owner](self.root, self.model)
        for cls, method, path, body in PROBES:
            try:
                await http.once(method, self.root + path, None if body is None else {**body, "model": self.model})
                return cls(self.root, self.model)
            except (EagerError, Transient):
                continue
        raise EagerError(
            f"cannot tell which server answers at {self.url} (owned_by {sorted(owners)}); "
            "eager supports vLLM, SGLang, llama.cpp's llama-server and llama-cpp-python's server"
        )

    async def _probe_id_prompts(self, http: Http) -> bool:
        dialect = self.dialect
        if not (dialect.streams_ids and dialect.accepts_id_prompts):
            log.warning(
                "%s streams token text, not ids: prompts go out as text and the server re-tokenises "
                "every prefix (token boundaries can drift); result token ids are mapped back from text",
                dialect.name,
            )
            return False
        ids = await dialect.tokenize(http, "Hello", add_special=True, parse_special=False)
        try:
            await http.json("POST", self.completions_url, {"model": self.model, "prompt": ids, "max_tokens": 1, "temperature": 0})
        except ServerError as exc:
            log.warning("%s refused a token-id prompt (%s); sending text prompts", self.url, exc.server_message)
            return False
        return True


def with_credentials(config: HttpConfig, credentials: Credentials | None) -> HttpConfig:
    """``config`` authenticating with what a URL held: Basic auth, or its key in place of ``$OPENAI_API_KEY``."""
    if credentials is None:
        return config
    if credentials.api_key:
        return replace(config, api_key=credentials.api_key)
    return replace(config, basic_auth=(credentials.user or "", credentials.password or ""))


def template_of(chat_template: str | Path | ChatTemplate | None) -> ChatTemplate | None:
    """The option ``chat_template`` (a path, a loaded template or None) as a template."""
    if chat_template is None or isinstance(chat_template, ChatTemplate):
        return chat_template
    return load_chat_template(chat_template)


def connect(
    url: str,
    served_model: str | None = None,
    *,
    entropy_top_k: int = 20,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    retries: int = 3,
    backoff_s: float = 0.5,
    chat_template: str | Path | ChatTemplate | None = None,
) -> Server:
    """Probe a server once (model, logprobs limit, family, token-id prompts); reuse it for every run.

    ``chat_template`` (a .gguf file or a Jinja file) is rendered here for
    chat prompts instead of asking the server, which some cannot do.
    """
    server = Server(url, served_model, HttpConfig(timeout_s=timeout_s, read_timeout_s=read_timeout_s, retries=retries, backoff_s=backoff_s), template_of(chat_template))

    async def probe() -> None:
        async with Http(server.http_config) as http:
            await server.probe(http, entropy_top_k)

    run_sync(probe)
    return server
