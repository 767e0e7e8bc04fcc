"""What one streamed token carries: its id or text, its top-K log-probabilities, its entropy.

Two wire formats reach here. OpenAI's completions format (vLLM, SGLang,
llama-cpp-python) has parallel lists ``tokens`` / ``top_logprobs`` (a dict
text -> logprob per token); vLLM with ``return_tokens_as_token_ids`` writes
each token as ``token_id:N``. llama.cpp's ``llama-server`` sends the chat
format ``content: [{id, token, bytes, logprob, top_logprobs: [...]}]``.
Both become :class:`StreamedToken` objects, candidates most probable first.

The entropy of a token is the paper's top-K entropy: the distribution
renormalised over the K log-probabilities the server sent
(:func:`eager.core.entropy.entropy_from_logprobs`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from eager.core.entropy import entropy_from_logprobs
from eager.errors import EagerError
from eager.remote.http import BadAnswer

# a token whose text looks like one of these ends a sequence
END_TOKEN_TEXT = re.compile(r"^(</s>|<\|?(end|eot|eos|im_end|endoftext|end_of_text|eot_id|return)[^<>]*\|?>|<end_of_turn>|<｜end▁of▁sentence｜>)$")
TOKEN_ID_TEXT = re.compile(r"^token_id:(-?\d+)$")
LOGPROB_SLACK = 1e-3  # a logprob a little above 0 is rounding; more is no probability


class NoLogprobs(EagerError):
    """The server sent tokens without their top-K log-probabilities."""


def no_logprobs_error(url: str) -> NoLogprobs:
    return NoLogprobs(
        f"{url} returned completions without top-K logprobs, which EAGER needs for its entropy; "
        "enable them on the server (vLLM: --max-logprobs 20; llama-cpp-python: logits_all, the default) "
        "or use a server that supports `logprobs` on /v1/completions"
    )


@dataclass(frozen=True)
class Candidate:
    """One of the top-K tokens of a step."""

    logprob: float
    text: str | None  # None where the server sent an id only
    id: int | None = None  # None where the server sent text only
    empty_bytes: bool = False  # llama-server renders control tokens as no bytes at all


@dataclass(frozen=True)
class StreamedToken:
    """The token the server sampled at one step, with the step's top-K candidates."""

    text: str | None
    id: int | None
    candidates: tuple[Candidate, ...]  # most probable first, at most K
    empty_bytes: bool = False


def looks_like_end(text: str | None) -> bool:
    """Whether a token's text is an end-of-generation marker (``<|im_end|>``, ``</s>``, ...)."""
    return bool(text) and bool(END_TOKEN_TEXT.match(text))  # type: ignore[arg-type]


def token_entropies(tokens: Sequence[StreamedToken]) -> np.ndarray:
    """Top-K entropy in nats of the step each token was sampled at, in one vectorised call.

    A token with fewer candidates than the widest is padded with -inf (a
    zero-probability entry adds nothing); one candidate gives 0.
    """
    width = max(len(t.candidates) for t in tokens)
    rows = np.full((len(tokens), width), -np.inf)
    for row, token in zip(rows, tokens):
        row[: len(token.candidates)] = [c.logprob for c in token.candidates]
    return entropy_from_logprobs(rows)


def token_entropy(token: StreamedToken) -> float:
    return float(token_entropies([token])[0])


def first_choice(event: dict, url: str) -> dict:
    """The first choice of a streamed event; ``{}`` where it has none (a usage-only chunk)."""
    choices = event.get("choices")
    if choices is None or choices == []:
        return {}
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise bad_answer(url, "choices that are not a list of objects", choices)
    return choices[0]


def finish_reason(choice: dict, url: str) -> str | None:
    """Why the server ended the stream ("stop", "length", ...), or None while it goes on."""
    reason = choice.get("finish_reason")
    if reason is not None and not isinstance(reason, str):
        raise bad_answer(url, "a finish_reason that is not a string", reason)
    return reason or None


def bad_answer(url: str, what: str, value: object) -> BadAnswer:
    shown = repr(value)
    return BadAnswer(f"the server at {url} sent {what}: {shown[:80] + '...' if len(shown) > 80 else shown}")


def parse_choice(choice: dict, k: int, url: str) -> list[StreamedToken]:
    """The tokens of one streamed (or whole) completion choice, in either format.

    A chunk with text but no log-probabilities is a :class:`NoLogprobs`
    error; a chunk with neither (a final ``finish_reason`` chunk) has no tokens.
    Anything else the formats do not allow (a wrong type, a logprob that is
    NaN, +inf or above 0) is a :class:`BadAnswer` naming the server.
    """
    if not isinstance(choice, dict):
        raise bad_answer(url, "a choice that is not an object", choice)
    logprobs = choice.get("logprobs")
    text = choice.get("text")
    if text is not None and not isinstance(text, str):
        raise bad_answer(url, "a token text that is not a string", text)
    if not logprobs:
        if text:
            raise no_logprobs_error(url)
        return []
    if not isinstance(logprobs, dict):
        raise bad_answer(url, "logprobs that are not an object", logprobs)
    if isinstance(logprobs.get("content"), list):
        return [_content_token(entry, k, url) for entry in logprobs["content"]]
    tokens = _list_of(logprobs.get("tokens") or [], str, "tokens", url)
    tops = logprobs.get("top_logprobs") or []
    if not isinstance(tops, list):
        raise bad_answer(url, "top_logprobs that are not a list", tops)
    if len(tops) < len(tokens) or any(not isinstance(t, dict) or not t for t in tops[: len(tokens)]):
        raise no_logprobs_error(url)
    out = [_listed_token(token, top, k, url) for token, top in zip(tokens, tops)]
    if len(out) == 1 and out[0].text is None:  # vLLM with token ids: the chunk's text is that token's
        out[0] = StreamedToken(text or "", out[0].id, out[0].candidates)
    return out


def _list_of(value: object, kind: type, name: str, url: str) -> list:
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise bad_answer(url, f"{name} that are not a list of {kind.__name__}", value)
    return value


def checked_logprob(value: object, url: str) -> float:
    """A logprob as sent: a number, not NaN, at most 0 (-inf is a probability of 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_answer(url, "a logprob that is not a number", value)
    lp = float(value)
    if math.isnan(lp) or lp > LOGPROB_SLACK:
        raise bad_answer(url, "an impossible logprob (NaN, or above 0)", value)
    return lp


def _number(value: object, url: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise bad_answer(url, "a probability that is not a number >= 0", value)
    return float(value)


def _id_or_text(token: str) -> tuple[int | None, str | None]:
    if not token.startswith("token_id:"):  # (checked first: the regular expression costs more per token)
        return None, token
    match = TOKEN_ID_TEXT.match(token)
    return (int(match.group(1)), None) if match else (None, token)


def _top(entries: Sequence[Candidate], k: int, url: str) -> tuple[Candidate, ...]:
    top = tuple(sorted(entries, key=lambda c: -c.logprob)[:k])
    if top and top[0].logprob == -math.inf:
        raise bad_answer(url, "top logprobs that are all -inf (no token has any probability)", [c.logprob for c in top])
    return top


def _listed_token(token: str, top: dict, k: int, url: str) -> StreamedToken:
    """OpenAI's completions format: the token, and a dict text (or ``token_id:N``) -> logprob."""
    token_id, token_text = _id_or_text(token)
    entries = []
    for key, lp in top.items():
        if lp is not None:
            key_id, key_text = _id_or_text(str(key))
            entries.append(Candidate(checked_logprob(lp, url), key_text, key_id))
    return StreamedToken(token_text, token_id, _top(entries, k, url))


def _content_token(entry: dict, k: int, url: str) -> StreamedToken:
    """llama-server's chat format: ``{id, token, bytes, logprob, top_logprobs: [{id, token, bytes, logprob}]}``."""
    if not isinstance(entry, dict):
        raise bad_answer(url, "a logprobs content entry that is not an object", entry)
    top = entry.get("top_logprobs") or entry.get("top_probs")
    if not top:
        raise no_logprobs_error(url)
    entries = [_content_candidate(c, url) for c in _list_of(top, dict, "top logprobs", url)]
    token_id, text = _content_id_text(entry, url)
    return StreamedToken(text, token_id, _top(entries, k, url), empty_bytes=entry.get("bytes") == [])


def _content_candidate(c: dict, url: str) -> Candidate:
    if "logprob" in c:
        lp = checked_logprob(c["logprob"], url)
    else:  # a probability: its log is a logprob
        lp = checked_logprob(math.log(max(_number(c.get("prob", 0.0), url), 1e-45)), url)
    token_id, text = _content_id_text(c, url)
    return Candidate(lp, text, token_id, empty_bytes=c.get("bytes") == [])


def _content_id_text(entry: dict, url: str) -> tuple[int | None, str | None]:
    token_id, text = entry.get("id"), entry.get("token")
    if token_id is not None and (isinstance(token_id, bool) or not isinstance(token_id, int)):
        raise bad_answer(url, "a token id that is not an integer", token_id)
    if text is not None and not isinstance(text, str):
        raise bad_answer(url, "a token text that is not a string", text)
    return token_id, text
