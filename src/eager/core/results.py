"""Typed results, with text at the edge: token ids are detokenised here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

from eager.core.tree import Branch, ForkEvent, Tree


@dataclass(frozen=True)
class SequenceResult:
    index: int
    text: str
    token_ids: list[int]  # completion tokens from the end of the prompt, inherited ones included
    parent: int | None
    fork_at: int | None
    finish_reason: str
    own_text: str = ""  # the part it generated itself, after leaving its parent
    entropies: list[float] = field(repr=False, default_factory=list)  # one per token, inherited ones included
    pieces: list[str] = field(repr=False, default_factory=list)  # the text of each OWN token (from fork_at on)

    @property
    def own_entropies(self) -> list[float]:
        """The entropy at each token it generated itself, rounded to 3 decimals (for outputs)."""
        return [round(h, 3) for h in self.entropies[self.fork_at or 0 :]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "parent": self.parent,
            "fork_at": self.fork_at,
            "finish_reason": self.finish_reason,
            "entropies": self.own_entropies,
            "pieces": self.pieces,
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


def token_pieces(token_ids: Sequence[int], decode: Callable[[Sequence[int]], str]) -> list[str]:
    """Each token's text, so that they join into ``decode(token_ids)``.

    A character split over several tokens (a multi-byte UTF-8 sequence) is given
    to the token that completes it; the tokens before it get "".
    """
    pieces: list[str] = []
    start = 0
    for end in range(1, len(token_ids) + 1):
        text = decode(token_ids[start:end])
        if "\ufffd" in text and end - start < 4 and end < len(token_ids):
            continue  # an incomplete character: wait for the next token
        pieces += [""] * (end - start - 1) + [text]
        start = end
    return pieces


def result_of(tree: Tree, decode, pieces: Callable[[Branch], list[str]] | None = None) -> GenerationResult:
    """A finished tree as a result; ``pieces`` gives a branch's own tokens' texts (default: from ``decode``)."""
    request = tree.request
    own_pieces = pieces or (lambda b: token_pieces(b.token_ids[b.fork_at or 0 :], decode))
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
            pieces=own_pieces(b),
        )
        for b in tree.branches
    ]
    return GenerationResult(
        prompt=request.prompt,
        method=request.method,
        prompt_tokens=len(request.prompt_ids),
        sequences=sequences,
        forks=[_with_texts(f, decode if pieces is None else None, sequences) for f in tree.forks],
        generated_tokens=tree.generated_tokens,
        wall_s=tree.compute_s,
        latency_s=tree.finished_at - tree.started_at,
        preemptions=tree.preemptions,
    )


def _with_texts(fork: ForkEvent, decode, sequences: list[SequenceResult]) -> ForkEvent:
    """The fork with its two alternatives' texts: the first own piece of parent and child after it."""
    def first_piece(index: int) -> str | None:
        seq = sequences[index]
        offset = fork.position - (seq.fork_at or 0)
        return seq.pieces[offset] if 0 <= offset < len(seq.pieces) else None

    probs = {k: round(p, 4) for k in ("parent_prob", "child_prob") if (p := getattr(fork, k)) is not None}
    if decode is not None and fork.child_token is not None:
        return replace(fork, parent_text=decode([fork.parent_token]), child_text=decode([fork.child_token]), **probs)
    return replace(fork, parent_text=first_piece(fork.parent), child_text=first_piece(fork.child), **probs)


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
