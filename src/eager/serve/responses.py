"""Results as OpenAI responses: choices (the trees' sequences), usage, and the ``eager`` object.

``usage.completion_tokens`` counts what the engine computed (a shared prefix
once); ``eager.sequence_tokens`` what n independent samples would have cost.
Choices are numbered across trees (a filled request's second tree continues
after the first's sequences), and so are forks' parent and child.

A request with several prompts numbers its choices prompt-major as OpenAI
does: prompt i's choices start at index i * n. Since n is "at most n" for an
EAGER tree, prompt i's k_i choices are i*n .. i*n + k_i - 1 and the indices
have gaps where a tree needed fewer (``eager.fill`` closes them); ``index // n``
is always the prompt.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from eager.core.results import GenerationResult
from eager.serve.requests import Planned


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """The text before the first stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def finish_reason(sequence, stops: tuple[str, ...]) -> str:
    cut = cut_at_stop(sequence.text, stops)[1]
    return "stop" if cut or sequence.finish_reason == "stop" else "length"


def offsets(results: list[GenerationResult], base: int = 0) -> list[int]:
    """The first choice index of each tree (a prompt's choices start at ``base``)."""
    out, total = [], base
    for result in results:
        out.append(total)
        total += len(result.sequences)
    return out


def usage(parts: list[list[GenerationResult]]) -> dict[str, int]:
    results = [r for part in parts for r in part]
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.generated_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _numbered(parts: list[list[GenerationResult]], n: int):
    """(prompt, tree, result, its first choice index) for every tree, prompt-major."""
    for p, results in enumerate(parts):
        for t, (result, start) in enumerate(zip(results, offsets(results, base=p * n))):
            yield p, t, result, start


def eager_summary(parts: list[list[GenerationResult]], planned: list[Planned]) -> dict[str, Any]:
    """What EAGER did: per choice its prompt, tree, parent and fork position; every fork; the token counts."""
    first, theta = planned[0].first, planned[0].theta
    choices, forks = [], []
    for p, t, result, start in _numbered(parts, planned[0].n):
        for s in result.sequences:
            parent = None if s.parent is None else start + s.parent
            choices.append({"index": start + s.index, "prompt": p, "tree": t, "parent": parent, "fork_at": s.fork_at, "tokens": len(s.token_ids)})
        for f in result.forks:
            forks.append({"prompt": p, "tree": t, "parent": start + f.parent, "child": start + f.child, "position": f.position, "entropy": round(f.entropy, 4), "threshold": round(f.threshold, 4)})
    results = [r for part in parts for r in part]
    return {
        "method": first.method,
        "theta": None if theta is None else theta.value,
        "theta_source": None if theta is None else theta.source,
        "trees": len(results),
        "sequences": len(choices),
        "generated_tokens": sum(r.generated_tokens for r in results),
        "sequence_tokens": sum(r.sequence_tokens for r in results),
        "preemptions": sum(r.preemptions for r in results),
        "forks": forks,
        "choices": choices,
    }


@dataclass
class Format:
    """One endpoint's shapes: text completions or chat completions."""

    chat: bool
    model: str
    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _choice(self, index: int, text: str, reason: str | None) -> dict[str, Any]:
        if self.chat:
            return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": reason}
        return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}

    def response(self, parts: list[list[GenerationResult]], planned: list[Planned]) -> dict[str, Any]:
        """``parts[i]``: the trees grown for prompt i."""
        choices = []
        stops = planned[0].stops
        for _, _, result, start in _numbered(parts, planned[0].n):
            for s in result.sequences:
                choices.append(self._choice(start + s.index, cut_at_stop(s.text, stops)[0], finish_reason(s, stops)))
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage(parts),
            "eager": eager_summary(parts, planned),
        }

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices, **extra}

    def delta(self, index: int, text: str, reason: str | None, first: bool) -> dict[str, Any]:
        if self.chat:
            delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}
