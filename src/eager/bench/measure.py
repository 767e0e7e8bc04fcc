"""The speed measurements on one backend, each a function returning plain numbers.

* (a) engine vs raw: our engine running ``parallel`` against :class:`RawLoop`
  on exactly the same batches;
* (b) entropy + sampling: the engine's maths on real logits rows, as a share
  of the decode step that produced them;
* (c) EAGER-init vs parallel on GSM8K questions: tokens and wall-clock;
* (f) scaling: tokens/s and KV cells as prompts in flight grow.

The fork and cache measurements (d) are in :mod:`eager.bench.cache`, the
transformers peer (e) in :mod:`eager.bench.peer`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from eager.backends.base import Backend, StepItem
from eager.bench.clock import clocked_runs, repeated_seconds, spread, steady_seconds
from eager.bench.config import BenchConfig
from eager.bench.raw import RawLoop, decode_schedule, sampled_tokens
from eager.core.config import BranchingConfig, SamplingConfig
from eager.core.entropy import batch_entropy
from eager.core.results import GenerationResult
from eager.core.sampling import sample
from eager.core.tree import TreeRequest, branch_rng
from eager.engine import Engine
from eager.errors import EagerError

# -- a: engine vs a raw llama-cpp-python loop ----------------------------------------------


def _engine_parallel(
    backend: Backend, prompt_ids: Sequence[int], M: int, max_tokens: int, seed: int, on_step: Callable[[Any], None] | None = None
) -> GenerationResult:
    request = TreeRequest(
        "",
        "parallel",
        BranchingConfig(max_sequences=M),
        SamplingConfig(max_tokens=max_tokens, seed=seed),
        prompt_ids=tuple(prompt_ids),
    )
    [(_, result)] = list(Engine(backend, on_step=on_step).run([request]))
    return result


class _Interleaved:
    """An engine ``on_step`` callback that runs the raw loop's matching step after each engine step.

    Each engine step and its raw twin run back to back, so both meet the same
    load from other work on the machine; the raw step is timed apart and
    left out of the engine's time.
    """

    def __init__(self, raw_steps: Iterator[None]) -> None:
        self.raw_steps = raw_steps
        self.engine: list[float] = []
        self.raw: list[float] = []
        self._resumed = time.perf_counter()

    def __call__(self, _stats: Any = None) -> None:
        paused = time.perf_counter()
        self.engine.append(paused - self._resumed)
        next(self.raw_steps, None)
        self._resumed = time.perf_counter()
        self.raw.append(self._resumed - paused)


def measure_engine_vs_raw(backend: Backend, raw: RawLoop, prompt_ids: Sequence[int], cfg: BenchConfig) -> dict[str, Any]:
    """Tokens/s of the engine and of the raw loop on exactly the same batches.

    The engine samples at T = 0.6, so a sequence may end early; a first
    engine run (also the warm-up) gives its schedule, how many sequences each
    step decoded, which the raw loop replays: both decode the same batches
    and draw the same number of tokens. Then ``repeats`` runs interleave the
    two step by step (:class:`_Interleaved`); each side's time is
    :func:`steady_seconds` of its step times.
    """
    M, sizes = cfg.M, cfg.sizes
    schedule = decode_schedule(_engine_parallel(backend, prompt_ids, M, sizes.max_tokens, cfg.seed))
    engine_runs, raw_runs = [], []
    for _ in range(sizes.repeats):
        pairs = _Interleaved(raw.steps(prompt_ids, M, schedule))
        result = _engine_parallel(backend, prompt_ids, M, sizes.max_tokens, cfg.seed, pairs)
        if decode_schedule(result) != schedule or len(pairs.raw) != 1 + len(schedule):
            raise EagerError("engine vs raw: the same seed gave a different schedule; the comparison is void")
        engine_runs.append(pairs.engine)
        raw_runs.append(pairs.raw)
    tokens = sampled_tokens(M, schedule)
    engine_s, raw_s = steady_seconds(engine_runs), steady_seconds(raw_runs)
    steps = 1 + len(schedule)
    return {
        "engine_tokens_per_s": tokens / engine_s,
        "raw_tokens_per_s": tokens / raw_s,
        "engine_vs_raw": raw_s / engine_s,
        "engine_vs_raw_detail": {
            "prompt_tokens": len(prompt_ids),
            "tokens": tokens,
            "steps": steps,
            "engine_s": engine_s,
            "raw_s": raw_s,
            "engine_overhead_ms_per_step": 1e3 * (engine_s - raw_s) / steps,
            "engine_runs_s": [sum(r) for r in engine_runs],
            "raw_runs_s": [sum(r) for r in raw_runs],
            "engine_tokens_per_s_runs": spread([tokens / sum(r) for r in engine_runs]),
            "raw_tokens_per_s_runs": spread([tokens / sum(r) for r in raw_runs]),
        },
    }


# -- b: entropy and sampling as a share of a step ------------------------------------------


def _decode_rows(backend: Backend, prompt_ids: Sequence[int], M: int, steps: int) -> tuple[np.ndarray, list[float]]:
    """Real logits rows of M diverging sequences, and the time of each decode step."""
    root = backend.new_sequence()
    first = backend.step([StepItem(root, tuple(prompt_ids))])[0]
    seqs = [root] + [backend.fork(root) for _ in range(M - 1)]
    tokens = [int(t) for t in np.argsort(-first)[:M]]  # a different start for each
    step_times: list[float] = []
    try:
        for _ in range(steps):
            start = time.perf_counter()
            rows = backend.step([StepItem(s, (t,)) for s, t in zip(seqs, tokens)])
            step_times.append(time.perf_counter() - start)
            tokens = [int(np.argmax(row)) for row in rows]
    finally:
        for seq in seqs:
            backend.release(seq)
    return rows, step_times


def measure_entropy_overhead(backend: Backend, prompt_ids: Sequence[int], cfg: BenchConfig) -> dict[str, Any]:
    """What the engine's maths costs per step, against the step itself.

    Per step the engine takes one entropy over the batch and draws one token
    per row (T = 0.6, the paper's); both are timed on rows captured from the
    model, against the decode steps that produced them.
    """
    sizes = cfg.sizes
    rows, step_times = _decode_rows(backend, prompt_ids, cfg.M, sizes.decode_steps)
    step_s = min(step_times)
    sampling = SamplingConfig()
    rngs = [branch_rng(cfg.seed, (0,), i) for i in range(len(rows))]
    topk = repeated_seconds(lambda: batch_entropy(rows, "topk", 20), sizes.timing_repeats)
    full = repeated_seconds(lambda: batch_entropy(rows, "full", 20), sizes.timing_repeats)
    sampled = repeated_seconds(lambda: [sample(r, sampling, g) for r, g in zip(rows, rngs)], sizes.timing_repeats)
    topk_s, full_s, sample_s = min(topk), min(full), min(sampled)
    topk_share = (topk_s + sample_s) / step_s
    return {
        "entropy_overhead": topk_share,
        "entropy_overhead_topk": topk_share,
        "entropy_overhead_full": (full_s + sample_s) / step_s,
        "entropy_detail": {
            "batch": len(rows),
            "vocab": int(rows.shape[1]),
            "decode_step_ms": 1e3 * step_s,
            "entropy_topk_ms": 1e3 * topk_s,
            "entropy_full_ms": 1e3 * full_s,
            "sampling_ms": 1e3 * sample_s,
            "ms_over_repeats": {
                "decode_step": spread(step_times, 1e3), "entropy_topk": spread(topk, 1e3),
                "entropy_full": spread(full, 1e3), "sampling": spread(sampled, 1e3),
            },
        },
    }


# -- c: EAGER-init vs parallel -------------------------------------------------------------


def measure_eager_vs_parallel(backend: Backend, prompts: Sequence[str], cfg: BenchConfig) -> dict[str, Any]:
    """Generated tokens and wall-clock of EAGER-init relative to parallel sampling.

    Each method runs all the prompts in one call (they are batched together),
    ``run_repeats`` times; wall-clock is :func:`steady_seconds` of those runs.
    Each method also reports the prompts in flight over its steps and its preemptions.
    """
    from eager.api import generate

    runs = {}
    for method in ("parallel", "eager-init"):
        results, steps, occupancy = clocked_runs(
            lambda clock: generate(
                list(prompts), backend=backend, method=method, M=cfg.M, theta=cfg.theta,
                max_tokens=cfg.sizes.problem_tokens, seed=cfg.seed, on_step=clock
            ),
            cfg.sizes.run_repeats,
        )
        runs[method] = {
            "tokens": sum(r.generated_tokens for r in results),
            "sequences": sum(len(r.sequences) for r in results),
            "steps": len(steps[0]) - 1,
            "wall_s": steady_seconds(steps),
            "wall_s_runs": spread([sum(run) for run in steps]),
            **occupancy,
        }
    parallel, eager = runs["parallel"], runs["eager-init"]
    token_ratio = eager["tokens"] / parallel["tokens"]
    wall_ratio = eager["wall_s"] / parallel["wall_s"]
    return {
        "token_ratio": token_ratio,
        "wall_ratio": wall_ratio,
        "eager_detail": {
            "problems": len(prompts),
            "max_tokens": cfg.sizes.problem_tokens,
            "theta": cfg.theta,
            "wall_over_token_ratio": wall_ratio / token_ratio,
            "parallel": parallel,
            "eager_init": eager,
        },
    }


# -- f: scaling --------------------------------------------------------------------------------


def measure_scaling(backend: Backend, prompts: Sequence[str], cfg: BenchConfig) -> list[dict[str, Any]]:
    """Tokens/s and KV cells with 1, 2, 4 (8, 16, 32 in the full bench) prompts given at once, M sequences each.

    Tokens/s is generated tokens over wall-clock (:func:`steady_seconds` of
    ``run_repeats`` runs), prefill included. KV cells are each tree's prompt
    plus its generated tokens (shared cells once): what the cache would hold
    with every sequence at its longest. Whether all prompts were in flight
    together (the cache and the backend's sequence slots decide) is measured:
    prompts in flight after each step (most and mean) and preemptions.
    """
    from eager.api import generate

    rows = []
    for n in cfg.scaling_prompts:
        results, steps, occupancy = clocked_runs(
            lambda clock: generate(
                list(prompts[:n]), backend=backend, method="parallel", M=cfg.M, max_tokens=cfg.sizes.scaling_tokens, seed=cfg.seed, on_step=clock
            ),
            cfg.sizes.run_repeats,
        )
        seconds = steady_seconds(steps)
        tokens = sum(r.generated_tokens for r in results)
        cells = sum(r.prompt_tokens + r.generated_tokens for r in results)
        rows.append(
            {
                "prompts": n,
                "sequences": sum(len(r.sequences) for r in results),
                "tokens": tokens,
                "seconds": seconds,
                "seconds_runs": spread([sum(run) for run in steps]),
                "tokens_per_s": tokens / seconds,
                "kv_cells": cells,
                "kv_mib": cells * backend.kv_bytes_per_cell / 2**20,
                **occupancy,
            }
        )
    return rows
