"""Frozen, validated configuration for sampling and branching.

Every check raises :class:`EagerError` with one clear line, so the CLI can show
it as it is and the Python API fails early on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass

from eager.errors import EagerError

ENTROPY_MODES = ("topk", "full")


@dataclass(frozen=True)
class SamplingConfig:
    """How a token is drawn when a branch does not fork.

    Attributes:
        temperature: divides the logits; 0 means greedy (argmax).
        top_p: nucleus sampling mass; 1.0 disables it.
        top_k: keep only the k most probable tokens; 0 disables it.
        max_tokens: completion tokens per sequence (inherited ones included).
        seed: the run seed; every branch draws from its own generator derived
            from it, so the same seed reproduces the same tree.
    """

    temperature: float = 0.6
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise EagerError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise EagerError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise EagerError(f"top-k must be >= 0 (0 disables it), got {self.top_k}")
        if self.max_tokens < 1:
            raise EagerError(f"max-tokens must be >= 1, got {self.max_tokens}")


@dataclass(frozen=True)
class BranchingConfig:
    """The EAGER-init rules (see shared/EAGER.md).

    Attributes:
        max_sequences: M, the cap on sequences per prompt, live and finished.
        theta: the entropy threshold in nats; a branch forks when its entropy
            exceeds the effective threshold.
        dynamic_theta: use max(theta, running P99 of the prompt's entropies).
        window: W, no fork after this many consecutive steps without one.
        entropy: "topk" (renormalised over the top-K tokens, as in the paper)
            or "full" (exact, over the whole vocabulary).
        entropy_top_k: K for "topk" entropy.
        end_of_thinking: a sequence that has emitted this marker forks no more;
            empty disables the rule.
    """

    max_sequences: int = 8
    theta: float = 2.2
    dynamic_theta: bool = True
    window: int = 1000
    entropy: str = "topk"
    entropy_top_k: int = 20
    end_of_thinking: str = "</think>"

    def __post_init__(self) -> None:
        if self.max_sequences < 1:
            raise EagerError(f"M (max sequences per prompt) must be >= 1, got {self.max_sequences}")
        if not self.theta >= 0:
            raise EagerError(f"theta must be >= 0 nats, got {self.theta}")
        if self.window < 1:
            raise EagerError(f"the branching window W must be >= 1 step, got {self.window}")
        if self.entropy not in ENTROPY_MODES:
            raise EagerError(f"unknown entropy mode {self.entropy!r}; choose from {', '.join(ENTROPY_MODES)}")
        if self.entropy_top_k < 2:
            raise EagerError(f"entropy top-K must be >= 2, got {self.entropy_top_k}")
