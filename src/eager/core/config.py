"""Frozen, validated configuration: every option's default, help and check, once.

Each field carries its command-line flag and help text in its metadata
(:func:`option`), so the CLI builds its options from these classes
(``eager.cli.options``) and nothing restates a default. Every check raises
:class:`EagerError` with one clear line that names the option, not a flag:
the CLI maps names to flags (``option_flag``).
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any

from eager.errors import EagerError

ENTROPY_MODES = ("topk", "full")


def option(default: Any, help: str, *, flag: str | None = None, short: str | None = None, choices: tuple | None = None) -> Any:
    """A dataclass field whose metadata says how the CLI offers it.

    ``flag`` defaults to ``--`` + the field name with dashes; ``help`` may use
    ``{default}``.
    """
    meta = {"help": help, "flag": flag, "short": short, "choices": choices}
    return field(default=default, metadata=meta)


def option_flag(f: Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def options_of(cls) -> list[Field]:
    """The fields of a config class that the CLI offers (those made with :func:`option`)."""
    return [f for f in fields(cls) if "help" in f.metadata]


def default_of(cls, name: str) -> Any:
    f = {f.name: f for f in fields(cls)}[name]
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise EagerError(message)


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

    max_tokens: int = option(512, "completion tokens per sequence (default: {default})")
    temperature: float = option(0.6, "sampling temperature, 0 = greedy (default: {default})")
    top_p: float = option(1.0, "nucleus sampling mass (default: {default}, off)")
    top_k: int = option(0, "sample among the k most probable tokens (default: {default}, off)")
    seed: int = option(0, "run seed: the same seed reproduces the same tree (default: {default})")

    def __post_init__(self) -> None:
        _check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        _check(self.top_k >= 0, f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        _check(self.max_tokens >= 1, f"max_tokens must be >= 1, got {self.max_tokens}")


@dataclass(frozen=True)
class BranchingConfig:
    """The EAGER-init rules (see shared/EAGER.md).

    Attributes:
        max_sequences: M, the cap on sequences per prompt, live and finished.
        theta: the entropy threshold in nats; a branch forks when its entropy
            exceeds the effective threshold.
        dynamic_theta: use max(theta, running P99 of the prompt's entropies).
        window: W, no fork after this many consecutive steps of the tree without one.
        entropy: "topk" (renormalised over the top-K tokens, as in the paper)
            or "full" (exact, over the whole vocabulary).
        entropy_top_k: K for "topk" entropy.
        end_of_thinking: a sequence that has emitted this marker forks no more;
            empty disables the rule.
    """

    max_sequences: int = option(8, "M: sequences per prompt, live and finished (default: {default})", flag="--max-sequences", short="-M")
    theta: float = option(2.2, "entropy threshold in nats for a fork (default: {default}; the top-20 maximum is ln 20 = 3.0)")
    dynamic_theta: bool = option(True, "use max(theta, running P99 of the prompt's entropies) (default: on; --no-dynamic-theta turns it off)")
    window: int = option(1000, "W: no forks after this many steps of a tree in a row without one (default: {default})")
    entropy: str = option("topk", "top-K renormalised entropy (paper) or exact full-vocabulary entropy (default: {default})", choices=ENTROPY_MODES)
    entropy_top_k: int = option(20, "K for top-K entropy (default: {default})")
    end_of_thinking: str = option("</think>", 'a sequence forks no more after this marker (default: "{default}"; "" disables)')

    def __post_init__(self) -> None:
        _check(self.max_sequences >= 1, f"M (max sequences per prompt) must be >= 1, got {self.max_sequences}")
        _check(self.theta >= 0, f"theta must be >= 0 nats, got {self.theta}")
        _check(self.window >= 1, f"the branching window W must be >= 1 step, got {self.window}")
        _check(self.entropy in ENTROPY_MODES, f"unknown entropy mode {self.entropy!r}; choose from {', '.join(ENTROPY_MODES)}")
        _check(self.entropy_top_k >= 2, f"entropy top-K must be >= 2, got {self.entropy_top_k}")


KV_TYPES = ("f16", "q8_0")
FLASH_ATTN_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class EngineConfig:
    """How the local llama.cpp engine is set up.

    Attributes:
        ctx: KV cache cells shared by all sequences of all prompts in flight.
        threads: CPU threads for llama.cpp (None: the cores this process may use).
        max_prompts_in_flight: cap on trees decoded together (None: as many as fit).
        kv_type: the type of the cached keys and values (llama.cpp's type_k and
            type_v): "f16", or "q8_0" (8-bit blocks, 34 bytes per 32 values:
            about half the memory per cell, so twice the cells in the same memory).
        flash_attn: llama.cpp's flash attention: "on", "off", or "auto" (llama.cpp
            decides: on where the device supports it, as on CPU). llama.cpp
            quantizes the V cache only with flash attention, so q8_0 needs it.
        timeout_s: ``openai:`` models only: the longest one request to the server
            may live, from connecting to its last byte (a whole stream).
        read_timeout_s: ``openai:`` models only: the longest the server may stay
            silent (no byte; on a stream, no event: keep-alive comments do not count).
    """

    ctx: int = option(16384, "KV cache cells shared by all sequences (default: {default})")
    threads: int | None = option(None, "CPU threads for llama.cpp (default: the cores this process may use)")
    max_prompts_in_flight: int | None = option(None, "cap on trees decoded together (default: as many as the cache holds)")
    kv_type: str = option("f16", "type of the KV cache: f16, or q8_0 (about half the memory per cell; needs flash attention) (default: {default})", choices=KV_TYPES)
    flash_attn: str = option("auto", "llama.cpp flash attention: on, off, or auto (llama.cpp decides; on for CPU) (default: {default})", choices=FLASH_ATTN_MODES)
    timeout_s: float = option(600.0, "openai: models: seconds one request may take in all, a whole stream included; it is then retried (default: {default})", flag="--timeout")
    read_timeout_s: float = option(60.0, "openai: models: seconds the server may stay silent (on a stream: send no event) (default: {default})", flag="--read-timeout")

    def __post_init__(self) -> None:
        _check(self.ctx >= 16, f"ctx must be at least 16 cells, got {self.ctx}")
        _check(self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}")
        _check(
            self.max_prompts_in_flight is None or self.max_prompts_in_flight >= 1,
            f"max prompts in flight must be >= 1, got {self.max_prompts_in_flight}",
        )
        _check(self.kv_type in KV_TYPES, f"unknown kv_type {self.kv_type!r}; choose from {', '.join(KV_TYPES)}")
        _check(0 < self.timeout_s < float("inf"), f"timeout_s must be a number of seconds > 0, got {self.timeout_s}")
        _check(0 < self.read_timeout_s < float("inf"), f"read_timeout_s must be a number of seconds > 0, got {self.read_timeout_s}")
        _check(self.flash_attn in FLASH_ATTN_MODES, f"unknown flash_attn {self.flash_attn!r}; choose from {', '.join(FLASH_ATTN_MODES)}")
        _check(
            self.kv_type == "f16" or self.flash_attn != "off",
            f"kv_type {self.kv_type} needs flash_attn on (or auto): llama.cpp quantizes the V cache only with flash attention",
        )


ALIASES = {"M": "max_sequences"}


def split_options(options: dict[str, Any], *classes) -> list[dict[str, Any]]:
    """Plain keyword options (``theta=1.0, M=8, max_tokens=200``) sorted into one dict per class.

    ``M`` stands for ``max_sequences``. An unknown name is an error that lists the valid ones.
    """
    owners = {f.name: i for i, cls in enumerate(classes) for f in fields(cls)}
    out: list[dict[str, Any]] = [{} for _ in classes]
    for name, value in options.items():
        key = ALIASES.get(name, name)
        if key not in owners:
            valid = sorted({*owners, *ALIASES})
            raise EagerError(f"unknown option {name!r}; valid options: {', '.join(valid)}")
        out[owners[key]][key] = value
    return out


def build(cls, base=None, **values):
    """``base`` (or the class defaults) with ``values`` replaced; validated."""
    return replace(base, **values) if base is not None else cls(**values)
