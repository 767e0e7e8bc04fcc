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

# a token whose text looks like one of these ends a sequence
END_TOKEN_TEXT = re.compile(r"^(</s>|<\|?(end|eot|eos|im_end|endoftext|end_of_text|eot_id|return)[^<>]*\|?>|<end_of_turn>|<｜end▁of▁sentence｜>)$")
TOKEN_ID_TEXT = re.compile(r"^token_id:(-?\d+)$")


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


def parse_choice(choice: dict, k: int, url: str) -> list[StreamedToken]:
    """The tokens of one streamed (or whole) completion choice, in either format.

    A chunk with text but no log-probabilities is a :class:`NoLogprobs`
    error; a chunk with neither (a final ``finish_reason`` chunk) has no tokens.
    """
    logprobs = choice.get("logprobs")
    text = choice.get("text") or ""
    if not logprobs:
        if text:
            raise no_logprobs_error(url)
        return []
    if isinstance(logprobs.get("content"), list):
        return [_content_token(entry, k, url) for entry in logprobs["content"]]
    tokens = logprobs.get("tokens") or []
    tops = logprobs.get("top_logprobs") or []
    if len(tops) < len(tokens) or any(not isinstance(t, dict) or not t for t in tops[: len(tokens)]):
        raise no_logprobs_error(url)
    out = [_listed_token(token, top, k) for token, top in zip(tokens, tops)]
    if len(out) == 1 and out[0].text is None:  # vLLM with token ids: the chunk's text is that token's
        out[0] = StreamedToken(text, out[0].id, out[0].candidates)
    return out


def _id_or_text(token: str) -> tuple[int | None, str | None]:
    if not token.startswith("token_id:"):  # (checked first: the regular expression costs more per token)
        return None, token
    match = TOKEN_ID_TEXT.match(token)
    return (int(match.group(1)), None) if match else (None, token)


def _top(entries: Sequence[Candidate], k: int) -> tuple[Candidate, ...]:
    return tuple(sorted(entries, key=lambda c: -c.logprob)[:k])


def _listed_token(token: str, top: dict, k: int) -> StreamedToken:
    """OpenAI's completions format: the token, and a dict text (or ``token_id:N``) -> logprob."""
    token_id, token_text = _id_or_text(token)
    entries = []
    for key, lp in top.items():
        if lp is not None:
            key_id, key_text = _id_or_text(key)
            entries.append(Candidate(float(lp), key_text, key_id))
    return StreamedToken(token_text, token_id, _top(entries, k))


def _content_token(entry: dict, k: int, url: str) -> StreamedToken:
    """llama-server's chat format: ``{id, token, bytes, logprob, top_logprobs: [{id, token, bytes, logprob}]}``."""
    top = entry.get("top_logprobs") or entry.get("top_probs")
    if not top:
        raise no_logprobs_error(url)
    entries = [
        Candidate(
            float(c["logprob"]) if "logprob" in c else math.log(max(float(c.get("prob", 0.0)), 1e-45)),
            c.get("token"),
            c.get("id"),
            empty_bytes=c.get("bytes") == [],
        )
        for c in top
    ]
    return StreamedToken(entry.get("token"), entry.get("id"), _top(entries, k), empty_bytes=entry.get("bytes") == [])
