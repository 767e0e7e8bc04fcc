"""Typed results, with text at the edge: token ids are detokenised here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from eager.core.tree import ForkEvent, Tree


@dataclass(frozen=True)
class SequenceResult:
    index: int
    text: str
    token_ids: list[int]  # completion tokens from the end of the prompt, inherited ones included
    parent: int | None
    fork_at: int | None
    finish_reason: str
    own_text: str = ""  # the part it generated itself, after leaving its parent
    entropies: list[float] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "parent": self.parent,
            "fork_at": self.fork_at,
            "finish_reason": self.finish_reason,
        }


@dataclass(frozen=True)
class GenerationResult:
    prompt: str
    method: str
    prompt_tokens: int
    sequences: list[SequenceResult]
    forks: list[ForkEvent]
    generated_tokens: int  # what the engine computed: a shared prefix counted once
    wall_s: float  # this prompt's share of the engine's time (shares of one run add up to its wall-clock)
    latency_s: float  # from entering the cache to its last branch finishing
    preemptions: int = 0  # times its cache was released to make room (recomputed from its tokens)

    @property
    def sequence_tokens(self) -> int:
        """Sum of sequence lengths, as if every sequence had been generated alone."""
        return sum(len(s.token_ids) for s in self.sequences)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "method": self.method,
            "prompt_tokens": self.prompt_tokens,
            "sequences": [s.to_dict() for s in self.sequences],
            "forks": [asdict(f) for f in self.forks],
            "generated_tokens": self.generated_tokens,
            "sequence_tokens": self.sequence_tokens,
            "wall_s": round(self.wall_s, 4),
            "latency_s": round(self.latency_s, 4),
            "preemptions": self.preemptions,
        }


def result_of(tree: Tree, decode) -> GenerationResult:
    request = tree.request
    sequences = [
        SequenceResult(
            index=b.index,
            text=decode(b.token_ids),
            token_ids=list(b.token_ids),
            parent=b.parent,
            fork_at=b.fork_at,
            finish_reason=b.finish_reason or "length",
            own_text=decode(b.token_ids[b.fork_at or 0 :]),
            entropies=list(b.entropies),
        )
        for b in tree.branches
    ]
    return GenerationResult(
        prompt=request.prompt,
        method=request.method,
        prompt_tokens=len(request.prompt_ids),
        sequences=sequences,
        forks=list(tree.forks),
        generated_tokens=tree.generated_tokens,
        wall_s=tree.compute_s,
        latency_s=tree.finished_at - tree.started_at,
        preemptions=tree.preemptions,
    )


@dataclass(frozen=True)
class StepStats:
    """What a progress display needs after each step."""

    steps: int
    prompts_done: int
    prompts_in_flight: int
    live_branches: int
    generated_tokens: int
    elapsed_s: float
    preemptions: int = 0  # trees preempted (released, recomputed later) and branches parked so far
