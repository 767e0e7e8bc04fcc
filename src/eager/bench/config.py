"""What one bench run measures and how much work each measurement does.

The fields made with :func:`eager.core.config.option` are the ones ``eager bench``
offers as flags; their defaults and help live here only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from eager.backends.llama import LLAMA_MAX_SEQ
from eager.core.config import option
from eager.errors import EagerError
from eager.models import DEFAULT_MODEL, TEST_MODEL


@dataclass(frozen=True)
class BenchSizes:
    """How much work each measurement does.

    Attributes:
        max_tokens: tokens per sequence for engine vs raw and for the transformers peer.
        repeats: engine / raw runs, alternating.
        decode_steps: decode steps timed for the step time (entropy share, fork cost).
        timing_repeats: repeats of the entropy and sampling timings.
        problems: GSM8K questions for EAGER-init vs parallel.
        problem_tokens: tokens per sequence there.
        scaling_tokens: tokens per sequence in the scaling runs.
        scaling_prompts: prompts in flight for the scaling runs (M sequences each,
            at most 256 sequences in all: llama.cpp's cap).
        run_repeats: runs of each EAGER-init / parallel / scaling / KV configuration.
        kv_problems: GSM8K questions for the KV section (parallel sampling, M each).
        kv_tokens: tokens per sequence there (and of the greedy accuracy runs).

    Every headline time is the fastest of its repeats (on a shared machine the
    minimum is the estimate least disturbed by other work); the details give
    each timing's min / median / max over its repeats.
    """

    max_tokens: int
    repeats: int
    decode_steps: int
    timing_repeats: int
    problems: int
    problem_tokens: int
    scaling_tokens: int
    scaling_prompts: tuple[int, ...]
    run_repeats: int
    kv_problems: int
    kv_tokens: int


QUICK = BenchSizes(
    max_tokens=24, repeats=2, decode_steps=6, timing_repeats=20, problems=2, problem_tokens=32,
    scaling_tokens=8, scaling_prompts=(1, 2, 4), run_repeats=3, kv_problems=1, kv_tokens=16,
)
FULL = BenchSizes(
    max_tokens=48, repeats=3, decode_steps=12, timing_repeats=50, problems=12, problem_tokens=128,
    scaling_tokens=16, scaling_prompts=(1, 2, 4, 8, 16, 32), run_repeats=3, kv_problems=12, kv_tokens=128,
)


@dataclass(frozen=True)
class BenchConfig:
    """One bench run.

    Attributes:
        model: packaged model name or .gguf path; None: :data:`TEST_MODEL` when
            ``quick``, else :data:`DEFAULT_MODEL` (see :attr:`model_name`).
        quick: the small sizes (:data:`QUICK`), else :data:`FULL`.
        M: sequences per prompt.
        threads: CPU threads for llama.cpp and torch (None: all cores).
        ctx: KV cells of the main context (engine, raw loop, scaling); in the KV
            section, the f16 memory every setting gets (q8_0 fits more cells in it).
        n_batch: tokens per decode call.
        seed: run seed.
        theta: EAGER-init's threshold in the EAGER-vs-parallel section, in nats, or
            "auto" (as generate and eval): the model's calibrated or shipped value
            (``eager.api.resolve_theta``); the output records which it was.
        peer: run the transformers peer when it is installed.
        kv: run the KV section (cache type and flash attention).
        prefix_tokens: the shared prefix for the fork measurements.
        fill_ctx: KV cells of the small context filled until full.
        fill_new_tokens: new tokens per sequence that must fit beside the shared prefix there.
    """

    model: str | None = option(None, f"packaged model name or .gguf path (default: {DEFAULT_MODEL}; {TEST_MODEL} with --quick)")
    quick: bool = option(False, "small sizes, to check that every section runs (not for numbers): under a minute on SmolLM2 on an idle 2-core machine (57 s), about 4.5 minutes with 1 thread on a busy one")
    M: int = option(8, "sequences per prompt (default: {default})", flag="-M")
    threads: int | None = option(None, "CPU threads for llama.cpp and torch (default: all cores)")
    ctx: int = option(8192, "KV cells of the main context (default: {default})")
    n_batch: int = 512
    seed: int = option(0, "run seed (default: {default})")
    theta: float | str = option("auto", "EAGER-init's threshold for the EAGER-vs-parallel section, or auto: the model's calibrated or shipped value (default: {default})")
    peer: bool = True
    kv: bool = option(True, "the KV section: f16 vs q8_0 cache, flash attention on vs off (default: on; --no-kv skips it)")
    prefix_tokens: int = 400
    fill_ctx: int = 1024
    fill_new_tokens: int = 60

    def __post_init__(self) -> None:
        if self.M < 2:
            raise EagerError(f"bench needs M >= 2 sequences per prompt, got {self.M}")
        if isinstance(self.theta, str) and self.theta != "auto":
            raise EagerError(f"theta must be a number of nats or 'auto', got {self.theta!r}")
        if self.threads is not None and self.threads < 1:
            raise EagerError(f"threads must be >= 1, got {self.threads}")
        need = self.prefix_tokens + self.M * self.fill_new_tokens
        if need > self.fill_ctx:
            raise EagerError(f"the fill test needs {need} cells, more than its context of {self.fill_ctx}")

    @property
    def model_name(self) -> str:
        return self.model or (TEST_MODEL if self.quick else DEFAULT_MODEL)

    @property
    def sizes(self) -> BenchSizes:
        return QUICK if self.quick else FULL

    @property
    def n_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    @property
    def scaling_prompts(self) -> tuple[int, ...]:
        return self.sizes.scaling_prompts

    @property
    def max_sequences(self) -> int:
        """Sequences the main context holds: every scaling run's at once, within llama.cpp's cap."""
        return min(self.M * max(self.scaling_prompts), LLAMA_MAX_SEQ)
