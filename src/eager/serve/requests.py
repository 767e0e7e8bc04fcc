"""From an OpenAI request body to the trees the engine grows (text at this edge).

``n`` is EAGER's: n > 1 grows one EAGER-init tree of at most n sequences
(``eager.fill`` grows further trees until exactly n); n = 1 is plain
sampling. Every limit of :class:`~eager.serve.config.ServeConfig` is checked
here, before anything reaches the engine, and each failure is a
:class:`ApiError` naming the parameter.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any, Callable

from eager.api import ThetaChoice
from eager.core.config import BranchingConfig, SamplingConfig
from eager.core.results import GenerationResult
from eager.core.tree import TreeRequest, tokenized
from eager.engine import Engine
from eager.errors import EagerError
from eager.serve.config import ServeConfig
from eager.serve.protocol import ChatCompletionRequest, CompletionRequest


class ApiError(Exception):
    """An error the client caused or must know about, in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


@dataclass(frozen=True)
class Planned:
    """What a request becomes: the first tree, how to get the next, and what the response reports."""

    first: TreeRequest
    plan: Callable[[list[GenerationResult]], TreeRequest | None]
    n: int
    theta: ThetaChoice | None
    stops: tuple[str, ...]


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > 4 or any(not s for s in stops):
        raise bad("stop must be up to 4 non-empty strings", "stop")
    return stops


def _unsupported(body: CompletionRequest | ChatCompletionRequest) -> None:
    if body.presence_penalty or body.frequency_penalty:
        raise bad("presence_penalty and frequency_penalty are not supported (only 0)", "presence_penalty")
    if body.logprobs:
        raise bad("logprobs are not supported by eager serve", "logprobs")
    if getattr(body, "echo", False):
        raise bad("echo is not supported by eager serve", "echo")


def _branching(body, n: int, theta_for: Callable[[BranchingConfig], ThetaChoice]) -> tuple[str, BranchingConfig, ThetaChoice | None]:
    opts = body.eager
    method = "parallel" if n == 1 else opts.method
    M = opts.M or n
    if M > n:
        raise bad(f"eager.M ({M}) cannot exceed n ({n})", "eager.M")
    base = BranchingConfig(max_sequences=M, dynamic_theta=opts.dynamic_theta, entropy=opts.entropy, **({"window": opts.W} if opts.W else {}))
    if method == "parallel":
        return method, base, None
    choice = theta_for(base) if opts.theta == "auto" else ThetaChoice(float(opts.theta), "given", "given")
    try:
        return method, replace(base, theta=choice.value), choice
    except EagerError as exc:
        raise bad(str(exc), "eager.theta") from None


def _sampling(body, config: ServeConfig) -> SamplingConfig:
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens or config.default_max_tokens
    if max_tokens > config.max_tokens_limit:
        raise bad(f"max_tokens {max_tokens} exceeds this server's limit of {config.max_tokens_limit}", "max_tokens")
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    try:
        return SamplingConfig(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, seed=seed)
    except EagerError as exc:
        raise bad(str(exc)) from None


def plan_request(body, prompt: str, chat: bool, *, engine: Engine, config: ServeConfig, theta_for, prompt_ids: tuple[int, ...] = ()) -> Planned:
    """Check the body against the limits and build its first tree request (tokenised)."""
    _unsupported(body)
    n = body.n
    if n > config.max_n:
        raise bad(f"n {n} exceeds this server's limit of {config.max_n}", "n")
    if "\x00" in prompt:
        raise bad("the prompt contains a NUL character", "prompt")
    method, branching, theta = _branching(body, n, theta_for)
    request = TreeRequest(prompt, method, branching, _sampling(body, config), key=(0,), chat=chat, prompt_ids=prompt_ids)
    try:
        request = tokenized(request, engine.backend.tokenizer)
    except EagerError as exc:
        raise bad(str(exc), "prompt") from None
    if len(request.prompt_ids) > config.max_prompt_tokens:
        raise bad(f"the prompt has {len(request.prompt_ids)} tokens, beyond this server's limit of {config.max_prompt_tokens}", "prompt")
    try:
        engine.validate(request)
    except EagerError as exc:
        raise bad(str(exc), "max_tokens") from None
    fill = body.eager.fill and method != "parallel"
    return Planned(request, _filler(request, n) if fill else _single, n, theta, _stops(body.stop))


def _single(results: list[GenerationResult]) -> None:
    return None


def _filler(request: TreeRequest, n: int):
    """Further trees (keys 1, 2...) of at most the sequences still missing, until there are n."""
    M = request.branching.max_sequences

    def plan(results: list[GenerationResult]) -> TreeRequest | None:
        have = sum(len(r.sequences) for r in results)
        if have >= n:
            return None
        branching = replace(request.branching, max_sequences=min(M, n - have))
        return replace(request, branching=branching, key=(len(results),))

    return plan


# -- prompts ---------------------------------------------------------------------------


def completion_prompts(body: CompletionRequest, most: int) -> list[str]:
    """The request's prompts: one string, or a list of 1..``most`` (each grows its own tree)."""
    prompts = body.prompt if isinstance(body.prompt, list) else [body.prompt]
    if not 1 <= len(prompts) <= most:
        raise bad(f"give between 1 and {most} prompts (this server holds {most} at once), got {len(prompts)}", "prompt")
    return prompts


def completion_prompt(body: CompletionRequest) -> str:
    """The one prompt of a request that takes one (the playground's tree)."""
    if isinstance(body.prompt, list) and len(body.prompt) != 1:
        raise bad("this route grows one tree: give one prompt", "prompt")
    return completion_prompts(body, 1)[0]


def _content(message) -> str:
    content = message.content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
    return content or ""


def chat_prompt(body: ChatCompletionRequest, tokenizer) -> tuple[str, bool, tuple[int, ...]]:
    """(prompt text, chat template applied by the tokenizer?, prompt ids if rendered here).

    One user message goes through the model's own template as ``eager generate``
    does; a conversation is rendered with the GGUF's Jinja template where the
    tokenizer has one, else as "role: content" lines.
    """
    messages = [(m.role, _content(m)) for m in body.messages]
    if len(messages) == 1 and messages[0][0] == "user":
        return messages[0][1], True, ()
    template = getattr(tokenizer, "chat_template", None)
    if template and hasattr(tokenizer, "encode"):
        from eager.remote.templates import ChatTemplate

        try:
            text = ChatTemplate(template.decode("utf-8"), origin="the model").render_messages(messages)
        except EagerError as error:
            raise bad(f"this conversation: {error}", "messages") from None
        return text, False, tuple(tokenizer.encode(text, add_special=True, parse_special=True))
    return "\n".join(f"{role}: {text}" for role, text in messages) + "\nassistant:", False, ()
