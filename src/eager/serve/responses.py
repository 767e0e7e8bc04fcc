"""Results as OpenAI responses: choices (the trees' sequences), usage, and the ``eager`` object.

``usage.completion_tokens`` counts what the engine computed (a shared prefix
once); ``eager.sequence_tokens`` what n independent samples would have cost.
Choices are numbered across trees (a filled request's second tree continues
after the first's sequences), and so are forks' parent and child.
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


def offsets(results: list[GenerationResult]) -> list[int]:
    """The first choice index of each tree."""
    out, total = [], 0
    for result in results:
        out.append(total)
        total += len(result.sequences)
    return out


def usage(results: list[GenerationResult]) -> dict[str, int]:
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.generated_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def eager_summary(results: list[GenerationResult], planned: Planned) -> dict[str, Any]:
    first = planned.first
    starts = offsets(results)
    choices, forks = [], []
    for t, (result, start) in enumerate(zip(results, starts)):
        for s in result.sequences:
            parent = None if s.parent is None else start + s.parent
            choices.append({"index": start + s.index, "tree": t, "parent": parent, "fork_at": s.fork_at, "tokens": len(s.token_ids)})
        for f in result.forks:
            forks.append({"tree": t, "parent": start + f.parent, "child": start + f.child, "position": f.position, "entropy": round(f.entropy, 4), "threshold": round(f.threshold, 4)})
    theta = planned.theta
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

    def response(self, results: list[GenerationResult], planned: Planned) -> dict[str, Any]:
        choices = []
        for result, start in zip(results, offsets(results)):
            for s in result.sequences:
                choices.append(self._choice(start + s.index, cut_at_stop(s.text, planned.stops)[0], finish_reason(s, planned.stops)))
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage(results),
            "eager": eager_summary(results, planned),
        }

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices, **extra}

    def delta(self, index: int, text: str, reason: str | None, first: bool) -> dict[str, Any]:
        if self.chat:
            delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}
