"""Speed you can measure: ``eager bench``.

Six measurements in one run, on one model file, each a small function that
returns plain numbers:

* engine vs raw: our engine running ``parallel`` (M sequences) on one prompt
  against a minimal loop over llama-cpp-python's low-level API doing the same
  batched decode (same file, n_ctx, n_batch, threads; one prefill, M-1
  ``llama_memory_seq_cp`` forks, then the very same number of sequences at
  every step, greedy argmax on ``llama_get_logits_ith``);
* entropy + sampling: the cost of :mod:`eager.core.entropy` and
  :mod:`eager.core.sampling` on real logits rows of a batch of M, as a share of
  the decode step that produced them;
* EAGER-init vs parallel on GSM8K questions: tokens and wall-clock;
* the fork: ``llama_memory_seq_cp`` against a decode step and against
  prefilling the prefix again; KV cells against the sum of sequence lengths,
  cross-checked by filling a small context until llama.cpp reports it full;
* a peer: Hugging Face transformers ``generate(num_return_sequences=M)``
  (optional, ``pip install -e .[bench]``);
* scaling: tokens/s and KV cells as prompts in flight grow.

Library code: :func:`run_bench` returns a dict and prints nothing; only
:func:`cmd_bench` prints.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from eager.backends.base import CacheFull, StepItem
from eager.core.config import BranchingConfig, SamplingConfig
from eager.eval.datasets import format_prompt, load_problems
from eager.engine import Engine
from eager.core.entropy import batch_entropy
from eager.errors import EagerError
from eager.models import DEFAULT_MODEL, TEST_MODEL, resolve_model
from eager.core.results import GenerationResult
from eager.core.sampling import sample
from eager.core.tree import TreeRequest, branch_rng


# The headline numbers: every one is a finite float in a finished run
# (``vs_transformers`` is None when the peer is skipped, with a message).
HEADLINE_KEYS = (
    "engine_tokens_per_s",
    "raw_tokens_per_s",
    "engine_vs_raw",
    "entropy_overhead",
    "entropy_overhead_topk",
    "entropy_overhead_full",
    "token_ratio",
    "wall_ratio",
    "fork_ms",
    "step_ms",
    "prefill_ms",
    "kv_cells",
    "sum_seq_len",
)

TARGETS = {
    "engine_vs_raw": (">=", 0.90),
    "entropy_overhead": ("<", 0.05),
    "wall_over_token_ratio": ("<=", 1.10),
}

TRANSFORMERS_MISSING = "skipped: transformers not installed (pip install -e .[bench])"


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
        run_repeats: runs of each EAGER-init / parallel / scaling configuration.

    Every time reported is the fastest of its repeats: on a shared machine
    the minimum is the estimate least disturbed by other work.
    """

    max_tokens: int
    repeats: int
    decode_steps: int
    timing_repeats: int
    problems: int
    problem_tokens: int
    scaling_tokens: int
    run_repeats: int


QUICK = BenchSizes(
    max_tokens=24, repeats=2, decode_steps=6, timing_repeats=20, problems=2, problem_tokens=32, scaling_tokens=8, run_repeats=1
)
FULL = BenchSizes(
    max_tokens=48, repeats=3, decode_steps=12, timing_repeats=50, problems=12, problem_tokens=128, scaling_tokens=16, run_repeats=1
)


@dataclass(frozen=True)
class BenchConfig:
    """One bench run.

    Attributes:
        model: packaged model name or .gguf path.
        quick: the small sizes (:data:`QUICK`), else :data:`FULL`.
        M: sequences per prompt.
        threads: CPU threads for llama.cpp and torch (None: all cores).
        ctx: KV cells of the main context (engine, raw loop, scaling).
        n_batch: tokens per decode call.
        seed: run seed.
        theta: EAGER-init's threshold in the EAGER-vs-parallel section; pick one
            at which the model forks (see BENCHMARKS.md's sweep), or its trees
            stay single sequences and measure nothing but narrow steps.
        peer: run the transformers peer when it is installed.
        scaling_prompts: prompts in flight for the scaling runs.
        prefix_tokens: the shared prefix for the fork measurements.
        fill_ctx: KV cells of the small context filled until full.
        fill_new_tokens: new tokens per sequence that must fit beside the shared prefix there.
    """

    model: str = DEFAULT_MODEL
    quick: bool = False
    M: int = 8
    threads: int | None = None
    ctx: int = 8192
    n_batch: int = 512
    seed: int = 0
    theta: float = 2.2
    peer: bool = True
    scaling_prompts: tuple[int, ...] = (1, 2, 4, 8)
    prefix_tokens: int = 400
    fill_ctx: int = 1024
    fill_new_tokens: int = 60

    def __post_init__(self) -> None:
        if self.M < 2:
            raise EagerError(f"bench needs M >= 2 sequences per prompt, got {self.M}")
        if self.threads is not None and self.threads < 1:
            raise EagerError(f"--threads must be >= 1, got {self.threads}")
        need = self.prefix_tokens + self.M * self.fill_new_tokens
        if need > self.fill_ctx:
            raise EagerError(f"the fill test needs {need} cells, more than its context of {self.fill_ctx}")

    @property
    def sizes(self) -> BenchSizes:
        return QUICK if self.quick else FULL

    @property
    def n_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    @property
    def max_sequences(self) -> int:
        return self.M * max(self.scaling_prompts)


# -- timing helpers ------------------------------------------------------------------------


def _fastest_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm caches and allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


class StepClock:
    """Wall-clock of every step of a run: an engine's ``on_step`` callback, or called by hand.

    The first segment runs from the clock's creation to the first step's end,
    the last from the last step to :meth:`stop`.
    """

    def __init__(self) -> None:
        self.marks = [time.perf_counter()]

    def __call__(self, _stats: Any = None) -> None:
        self.marks.append(time.perf_counter())

    def stop(self) -> list[float]:
        self.marks.append(time.perf_counter())
        return list(np.diff(self.marks))


def steady_seconds(runs: Sequence[Sequence[float]]) -> float:
    """Seconds of a run with every step at its fastest over repeats of the same work.

    Repeats with the same seed do the same batches step by step, so the
    fastest time of each step estimates the run undisturbed by other work on
    the machine (bursts of it last longer than a step). Runs of different
    lengths (which same-seed runs never are) fall back to the fastest run.
    """
    if len({len(r) for r in runs}) != 1:
        return min(sum(r) for r in runs)
    return float(np.min(np.asarray(runs, dtype=np.float64), axis=0).sum())


def _clocked_runs(fn: Callable[[StepClock], Any], repeats: int) -> tuple[Any, list[list[float]]]:
    """(the last run's value, each run's step times); fn runs with a fresh clock as on_step."""
    runs, value = [], None
    for _ in range(max(repeats, 1)):
        clock = StepClock()
        value = fn(clock)
        runs.append(clock.stop())
    return value, runs


# -- a: engine vs a raw llama-cpp-python loop ----------------------------------------------


def decode_schedule(result: GenerationResult) -> list[int]:
    """Sequences decoded at each step after the prefill, read off a parallel result.

    A branch that ended on "length" decoded all its tokens but the last (that
    one was sampled and never fed back); one that ended on "stop" decoded all
    of them (the end-of-generation token is never appended).
    """
    decoded = [len(s.token_ids) - (s.finish_reason == "length") for s in result.sequences]
    return [sum(d > step for d in decoded) for step in range(max(decoded, default=0))]


def sampled_tokens(M: int, schedule: Sequence[int]) -> int:
    """Tokens drawn from logits: M from the prompt's row, then one per decoded sequence."""
    return M + sum(schedule)


class RawLoop:
    """The baseline: llama-cpp-python's low-level API and nothing of ours.

    Its own model and context from the same file, with the backend's settings;
    one prefill, M-1 ``llama_memory_seq_cp`` forks, then at each step a batch
    of live sequences filled token by token into a ``llama_batch_init`` batch,
    one ``llama_decode``, and a greedy argmax over ``llama_get_logits_ith``
    (greedy: the tokens do not change the work, only the batch shapes do).
    """

    def __init__(self, model_path: str, *, n_ctx: int, n_batch: int, n_seq_max: int, n_threads: int) -> None:
        import llama_cpp as lib

        from eager.backends.llama import _init_llama_backend, model_params

        _init_llama_backend()  # the backend's log silencing, once per process
        self.lib = lib
        self.model = lib.llama_model_load_from_file(model_path.encode("utf-8"), model_params(lib))
        if not self.model:
            raise EagerError(f"llama.cpp could not load {model_path}")
        cparams = lib.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = n_ctx, n_batch, n_batch, n_seq_max
        cparams.kv_unified, cparams.no_perf = True, True
        cparams.n_threads = cparams.n_threads_batch = n_threads
        self.ctx = lib.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise EagerError(f"llama.cpp could not create a context of {n_ctx} cells")
        self.memory = lib.llama_get_memory(self.ctx)
        self.n_batch = n_batch
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        self.batch = lib.llama_batch_init(n_batch, 0, 1)

    def _decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """entries: (token, position, sequence, wants logits)."""
        batch = self.batch
        for i, (token, pos, seq, wants) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = wants
        batch.n_tokens = len(entries)
        status = self.lib.llama_decode(self.ctx, batch)
        if status != 0:
            raise EagerError(f"raw loop: llama_decode returned {status}")

    def _argmax(self, i: int) -> int:
        row = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
        return int(np.argmax(row))

    def steps(self, prompt_ids: Sequence[int], M: int, schedule: Sequence[int]) -> Iterator[None]:
        """One step per ``next()``: first the prefill and the forks, then each scheduled decode."""
        lib = self.lib
        lib.llama_memory_clear(self.memory, True)
        try:
            n = len(prompt_ids)
            for lo in range(0, n, self.n_batch):
                chunk = prompt_ids[lo : lo + self.n_batch]
                self._decode([(t, lo + i, 0, lo + i == n - 1) for i, t in enumerate(chunk)])
            first = self._argmax(len(chunk) - 1)
            for seq in range(1, M):
                lib.llama_memory_seq_cp(self.memory, 0, seq, -1, -1)
            pending = [first] * M
            yield
            for step, live in enumerate(schedule):
                self._decode([(pending[s], n + step, s, True) for s in range(live)])
                pending[:live] = [self._argmax(s) for s in range(live)]
                yield
        finally:
            lib.llama_memory_clear(self.memory, True)

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.lib.llama_model_free(self.model)
            self.ctx = None


def _engine_parallel(backend, prompt_ids: Sequence[int], M: int, max_tokens: int, seed: int, on_step: Callable[[Any], None] | None = None) -> GenerationResult:
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


def measure_engine_vs_raw(backend, raw: RawLoop, prompt_ids: Sequence[int], cfg: BenchConfig) -> dict[str, Any]:
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
        },
    }


# -- b: entropy and sampling as a share of a step ------------------------------------------


def _decode_rows(backend, prompt_ids: Sequence[int], M: int, steps: int) -> tuple[np.ndarray, list[float]]:
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


def measure_entropy_overhead(backend, prompt_ids: Sequence[int], cfg: BenchConfig) -> dict[str, Any]:
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
    topk_s = _fastest_seconds(lambda: batch_entropy(rows, "topk", 20), sizes.timing_repeats)
    full_s = _fastest_seconds(lambda: batch_entropy(rows, "full", 20), sizes.timing_repeats)
    sample_s = _fastest_seconds(lambda: [sample(r, sampling, g) for r, g in zip(rows, rngs)], sizes.timing_repeats)
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
        },
    }


# -- c: EAGER-init vs parallel -------------------------------------------------------------


def measure_eager_vs_parallel(backend, prompts: Sequence[str], cfg: BenchConfig) -> dict[str, Any]:
    """Generated tokens and wall-clock of EAGER-init relative to parallel sampling.

    Each method runs all the prompts in one call (they are batched together),
    ``run_repeats`` times; wall-clock is :func:`steady_seconds` of those runs.
    """
    from eager.api import generate

    runs = {}
    for method in ("parallel", "eager-init"):
        results, steps = _clocked_runs(
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


# -- d: the fork and the cache --------------------------------------------------------------


def _timed_step(backend, items: list[StepItem]) -> float:
    start = time.perf_counter()
    backend.step(items)
    return time.perf_counter() - start


def measure_fork_cost(backend, prefix_ids: Sequence[int], cfg: BenchConfig) -> dict[str, Any]:
    """A fork against one decode step and against prefilling the prefix again.

    Cells: a unified llama.cpp cache stores one cell per distinct (position,
    token) of a tree, however many sequences share it, and this version of
    llama.cpp has no call that reports cells in use; so ``kv_cells`` is the
    prefix plus every sequence's own tokens, and ``sum_seq_len`` what M
    separate caches would hold. :func:`measure_cache_fill` checks the count.
    """
    M, steps = cfg.M, cfg.sizes.decode_steps
    root = backend.new_sequence()
    prefill_s = _timed_step(backend, [StepItem(root, tuple(prefix_ids))])
    seqs, fork_times = [root], []
    for _ in range(M - 1):
        start = time.perf_counter()
        seqs.append(backend.fork(root))
        fork_times.append(time.perf_counter() - start)
    token = int(prefix_ids[-1])
    try:
        step_times = [_timed_step(backend, [StepItem(s, (token,)) for s in seqs]) for _ in range(steps)]
    finally:
        for seq in seqs:
            backend.release(seq)
    n = len(prefix_ids)
    return {
        "fork_ms": 1e3 * min(fork_times),
        "step_ms": 1e3 * min(step_times),
        "prefill_ms": 1e3 * prefill_s,
        "kv_cells": n + M * steps,
        "sum_seq_len": M * (n + steps),
        "fork_detail": {"prefix_tokens": n, "sequences": M, "new_tokens_each": steps, "kv_bytes_per_cell": backend.kv_bytes_per_cell},
    }


def measure_cache_fill(backend, prefix_ids: Sequence[int], cfg: BenchConfig) -> dict[str, Any]:
    """Fill a small context until llama.cpp reports it full (llama_decode returns 1).

    The prefix is prefilled once and forked M-1 times; then M new tokens per
    step until the cache is full. If forks copied the prefix, M prefixes would
    not even fit; with shared cells the cache holds exactly prefix + new tokens.
    """
    M, n = cfg.M, len(prefix_ids)
    root = backend.new_sequence()
    backend.step([StepItem(root, tuple(prefix_ids))])
    seqs = [root] + [backend.fork(root) for _ in range(M - 1)]
    token, steps = int(prefix_ids[-1]), 0
    try:
        while True:
            backend.step([StepItem(s, (token,)) for s in seqs])
            steps += 1
    except CacheFull:
        pass
    finally:
        for seq in seqs:
            backend.release(seq)
    return {
        "n_ctx": backend.n_ctx,
        "prefix_tokens": n,
        "sequences": M,
        "steps_until_full": steps,
        "new_tokens_required": cfg.fill_new_tokens,
        "fits_required": steps >= cfg.fill_new_tokens,
        "cells_when_full": n + M * steps,
        "cells_if_prefix_copied": M * (n + cfg.fill_new_tokens),
    }


# -- e: a peer -------------------------------------------------------------------------------


def measure_transformers(model_path: Path, prompt_ids: Sequence[int], cfg: BenchConfig, ours_tokens_per_s: float) -> dict[str, Any]:
    """Hugging Face transformers ``generate(num_return_sequences=M)`` on the same GGUF.

    transformers dequantises the GGUF to float32 torch weights; the prompt is
    our token ids (the same vocabulary); every sequence is forced to
    ``max_tokens`` new tokens, as many as our engine's longest in (a), at the
    same temperature. Its load is not timed.
    """
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM
    except ImportError:
        return {"vs_transformers": None, "transformers_message": TRANSFORMERS_MISSING}
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(cfg.n_threads)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # the GGUF conversion's own progress bar
            model = AutoModelForCausalLM.from_pretrained(str(model_path.parent), gguf_file=model_path.name, dtype=torch.float32)
    except (ImportError, ValueError, OSError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return {"vs_transformers": None, "transformers_message": f"skipped: transformers could not load the GGUF ({first_line})"}
    input_ids = torch.tensor([list(prompt_ids)])
    new = cfg.sizes.max_tokens

    def generate(n: int):
        with torch.inference_mode():
            return model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True, temperature=0.6, top_k=0, top_p=1.0,
                max_new_tokens=n, min_new_tokens=n, num_return_sequences=cfg.M, pad_token_id=0,
            )

    torch.manual_seed(cfg.seed)
    generate(2)  # warm-up
    start = time.perf_counter()
    out = generate(new)
    seconds = time.perf_counter() - start
    tokens = cfg.M * (out.shape[1] - input_ids.shape[1])
    rate = tokens / seconds
    return {
        "vs_transformers": ours_tokens_per_s / rate,
        "transformers_message": f"transformers {transformers.__version__}, torch {torch.__version__}, float32",
        "transformers_detail": {"tokens_per_s": rate, "tokens": int(tokens), "seconds": seconds, "new_tokens_each": new},
    }


# -- f: scaling --------------------------------------------------------------------------------


def measure_scaling(backend, prompts: Sequence[str], cfg: BenchConfig) -> list[dict[str, Any]]:
    """Tokens/s and KV cells with 1, 2, 4, 8 prompts in flight, M sequences each.

    All prompts of a run are in flight together (the context holds them).
    Tokens/s is generated tokens over wall-clock (:func:`steady_seconds` of
    ``run_repeats`` runs), prefill included. KV cells
    are each tree's prompt plus its generated tokens (shared cells once): the
    cache's size when every sequence is at its longest.
    """
    from eager.api import generate

    rows = []
    for n in cfg.scaling_prompts:
        results, steps = _clocked_runs(
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
                "tokens_per_s": tokens / seconds,
                "kv_cells": cells,
                "kv_mib": cells * backend.kv_bytes_per_cell / 2**20,
            }
        )
    return rows


# -- the whole run ------------------------------------------------------------------------------


def _prefix(backend, texts: Sequence[str], n: int) -> list[int]:
    """A prompt of exactly n tokens made of real questions."""
    ids: list[int] = []
    for text in texts:
        ids += backend.tokenizer.encode_prompt(text, False)
        if len(ids) >= n:
            return ids[:n]
    raise EagerError(f"the bench questions make only {len(ids)} tokens, fewer than the {n}-token prefix")


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every measurement on one model; returns one JSON-ready dict."""
    from eager.backends.llama import LlamaBackend

    say = progress or (lambda _msg: None)
    path = resolve_model(cfg.model)
    problems = load_problems("gsm8k", limit=max(max(cfg.scaling_prompts), cfg.sizes.problems, 20))
    prompts = [format_prompt(p) for p in problems]
    say(f"loading {cfg.model}")
    n_batch = max(cfg.n_batch, cfg.max_sequences)
    backend = LlamaBackend(str(path), n_ctx=cfg.ctx, max_sequences=cfg.max_sequences, n_batch=n_batch, n_threads=cfg.n_threads)
    raw = fill = None
    try:
        raw = RawLoop(str(path), n_ctx=cfg.ctx, n_batch=n_batch, n_seq_max=cfg.max_sequences, n_threads=cfg.n_threads)
        fill = LlamaBackend(str(path), n_ctx=cfg.fill_ctx, max_sequences=cfg.M, n_batch=n_batch, n_threads=cfg.n_threads)
        prompt_ids = backend.tokenizer.encode_prompt(prompts[0], True)
        prefix_ids = _prefix(backend, [p.question for p in problems], cfg.prefix_tokens)
        out: dict[str, Any] = {
            "model": cfg.model,
            "model_file": path.name,
            "quick": cfg.quick,
            "M": cfg.M,
            "threads": cfg.n_threads,
            "n_ctx": backend.n_ctx,
            "n_batch": n_batch,
            "vocab": backend.vocab_size,
            "sizes": asdict(cfg.sizes),
        }
        sections = {
            "a. engine vs raw llama-cpp-python loop": lambda: measure_engine_vs_raw(backend, raw, prompt_ids, cfg),
            "b. entropy and sampling cost": lambda: measure_entropy_overhead(backend, prompt_ids, cfg),
            "c. EAGER-init vs parallel on GSM8K": lambda: measure_eager_vs_parallel(backend, prompts[: cfg.sizes.problems], cfg),
            "d. fork cost and KV cells": lambda: {
                **measure_fork_cost(backend, prefix_ids, cfg),
                "kv_fill": measure_cache_fill(fill, prefix_ids, cfg),
            },
            "f. scaling with prompts in flight": lambda: {"scaling": measure_scaling(backend, prompts[: max(cfg.scaling_prompts)], cfg)},
        }
        out["section_s"] = {}
        for name, measure in sections.items():
            say(name)
            start = time.perf_counter()
            out.update(measure())
            out["section_s"][name[0]] = time.perf_counter() - start
    finally:
        for handle in (fill, raw, backend):
            if handle is not None:
                handle.close()
    if cfg.peer:
        say("e. transformers peer (its load is not timed)")
        start = time.perf_counter()
        out.update(measure_transformers(path, prompt_ids, cfg, out["engine_tokens_per_s"]))
        out["section_s"]["e"] = time.perf_counter() - start
    else:
        out.update({"vs_transformers": None, "transformers_message": "skipped: --no-transformers"})
    out["targets"] = targets_of(out)
    return out


def targets_of(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    values = {
        "engine_vs_raw": out["engine_vs_raw"],
        "entropy_overhead": out["entropy_overhead"],
        "wall_over_token_ratio": out["eager_detail"]["wall_over_token_ratio"],
    }
    checks = {">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}
    return {
        name: {"value": value, "target": f"{op} {bound}", "met": checks[op](value, bound)}
        for name, value in values.items()
        for op, bound in [TARGETS[name]]
    }


# -- output --------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def to_markdown(out: dict[str, Any], command: str = "") -> str:
    e, ent, eag, fork, fill = out["engine_vs_raw_detail"], out["entropy_detail"], out["eager_detail"], out["fork_detail"], out["kv_fill"]
    peer = out.get("transformers_detail")
    lines = [
        f"# eager bench: {out['model']} ({'quick' if out['quick'] else 'full'})",
        "",
        f"M = {out['M']}, {out['threads']} thread{'s' if out['threads'] != 1 else ''}, n_ctx {out['n_ctx']}, n_batch {out['n_batch']}, vocabulary {out['vocab']}.",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += [
        "",
        "| key | value | meaning |",
        "| --- | --- | --- |",
        f"| engine_tokens_per_s | {_fmt(out['engine_tokens_per_s'])} | our engine, parallel M={out['M']}, one prompt, {e['tokens']} tokens in {e['steps']} steps |",
        f"| raw_tokens_per_s | {_fmt(out['raw_tokens_per_s'])} | raw llama-cpp-python loop, the same batches, greedy |",
        f"| engine_vs_raw | {_fmt(out['engine_vs_raw'])} | ours / raw tokens per second (target >= 0.90); the engine takes {_fmt(e['engine_overhead_ms_per_step'])} ms more per step |",
        f"| entropy_overhead | {_fmt(out['entropy_overhead'])} | top-20 entropy + sampling of {ent['batch']} rows / decode step ({_fmt(ent['decode_step_ms'])} ms) (target < 0.05) |",
        f"| entropy_overhead_topk | {_fmt(out['entropy_overhead_topk'])} | entropy {_fmt(ent['entropy_topk_ms'])} ms + sampling {_fmt(ent['sampling_ms'])} ms |",
        f"| entropy_overhead_full | {_fmt(out['entropy_overhead_full'])} | full-vocabulary entropy {_fmt(ent['entropy_full_ms'])} ms + sampling |",
        f"| token_ratio | {_fmt(out['token_ratio'])} | generated tokens, EAGER-init / parallel, {eag['problems']} GSM8K questions, {eag['max_tokens']} tokens max, theta {eag['theta']} |",
        f"| wall_ratio | {_fmt(out['wall_ratio'])} | wall-clock, EAGER-init / parallel (target <= 1.1 x token_ratio: {_fmt(eag['wall_over_token_ratio'])} x) |",
        f"| fork_ms | {_fmt(out['fork_ms'])} | one llama_memory_seq_cp of a {fork['prefix_tokens']}-token prefix |",
        f"| step_ms | {_fmt(out['step_ms'])} | one decode step of {fork['sequences']} sequences after that prefix |",
        f"| prefill_ms | {_fmt(out['prefill_ms'])} | prefilling the {fork['prefix_tokens']}-token prefix again (what a fork saves) |",
        f"| kv_cells | {out['kv_cells']} | cells in use: prefix once + {fork['sequences']} x {fork['new_tokens_each']} own tokens ({_fmt(out['kv_cells'] * fork['kv_bytes_per_cell'] / 2**20)} MiB) |",
        f"| sum_seq_len | {out['sum_seq_len']} | sum of sequence lengths (what separate caches would hold) |",
        f"| vs_transformers | {_fmt(out['vs_transformers'])} | ours / transformers tokens per second: {out['transformers_message']} |",
        "",
        f"KV fill check: a {fill['n_ctx']}-cell context, a {fill['prefix_tokens']}-token prefix forked {fill['sequences']} ways, "
        f"took {fill['steps_until_full']} decode steps of {fill['sequences']} tokens before llama_decode reported it full "
        f"(needed {fill['new_tokens_required']}: {_fmt(fill['fits_required'])}); cells when full = {fill['cells_when_full']}; "
        f"copying the prefix would need {fill['cells_if_prefix_copied']} cells.",
    ]
    if peer:
        lines.append(f"transformers: {_fmt(peer['tokens_per_s'])} tokens/s ({peer['tokens']} tokens, {peer['new_tokens_each']} new each, {_fmt(peer['seconds'])} s).")
    lines += ["", "| prompts in flight | sequences | tokens/s | KV cells | KV MiB |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['prompts']} | {r['sequences']} | {_fmt(r['tokens_per_s'])} | {r['kv_cells']} | {_fmt(r['kv_mib'])} |" for r in out["scaling"]]
    lines += ["", "| target | value | goal | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {_fmt(t['value'])} | {t['target']} | {_fmt(t['met'])} |" for name, t in out["targets"].items()]
    return "\n".join(lines) + "\n"


def plot(out: dict[str, Any], path: str | Path) -> None:
    """Two panels: tokens/s of engine, raw loop and peer; scaling with prompts in flight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = ["raw llama.cpp loop", "eager engine"]
    rates = [out["raw_tokens_per_s"], out["engine_tokens_per_s"]]
    if out.get("transformers_detail"):
        names.append("transformers")
        rates.append(out["transformers_detail"]["tokens_per_s"])
    bars = left.bar(names, rates, color=["#888888", "#1f77b4", "#ff7f0e"][: len(rates)])
    left.bar_label(bars, fmt="%.0f")
    left.set_ylabel("tokens / s (generated, prefill included)")
    left.set_title(f"parallel M={out['M']}, one prompt (engine/raw = {out['engine_vs_raw']:.2f})")
    scaling = out["scaling"]
    xs = [r["prompts"] for r in scaling]
    right.plot(xs, [r["tokens_per_s"] for r in scaling], "o-", color="#1f77b4", label="tokens/s")
    right.set_ylim(bottom=0)
    right.set_xscale("log", base=2)
    right.set_xticks(xs, [str(x) for x in xs])
    right.set_xlabel(f"prompts in flight (x {out['M']} sequences)")
    right.set_ylabel("tokens / s", color="#1f77b4")
    twin = right.twinx()
    twin.plot(xs, [r["kv_mib"] for r in scaling], "s--", color="#2ca02c", label="KV MiB")
    twin.set_ylim(bottom=0)
    twin.set_ylabel("KV cache in use (MiB)", color="#2ca02c")
    right.set_title("scaling")
    fig.suptitle(f"eager bench: {out['model']}, {out['threads']} thread{'s' if out['threads'] != 1 else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- command line ----------------------------------------------------------------------------------


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``eager bench`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "bench",
        help="measure speed: engine vs raw llama.cpp, entropy cost, EAGER vs parallel, forks, a transformers peer, scaling",
        description="Measure the engine's speed side by side with a raw llama-cpp-python loop and a transformers peer.",
    )
    p.add_argument("--model", default=None, help=f"packaged model name or .gguf path (default: {DEFAULT_MODEL}; {TEST_MODEL} with --quick)")
    p.add_argument("--quick", action="store_true", help="small sizes: the whole bench in under a minute on SmolLM2")
    p.add_argument("--out", required=True, help="write the results to FILE.json and a table to FILE.md")
    p.add_argument("--plot", default=None, help="also save a PNG: tokens/s side by side and scaling")
    p.add_argument("-M", type=int, default=8, help="sequences per prompt (default: 8)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for llama.cpp and torch (default: all cores)")
    p.add_argument("--ctx", type=int, default=8192, help="KV cells of the main context (default: 8192)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default: 0)")
    p.add_argument("--theta", type=float, default=2.2, help="EAGER-init's threshold for the EAGER-vs-parallel section (default: 2.2; use one at which your model forks)")
    p.add_argument("--no-transformers", dest="peer", action="store_false", help="skip the transformers peer")
    p.set_defaults(func=cmd_bench)
    return p


def _check_writable(path: Path) -> None:
    if not path.parent.is_dir():
        raise EagerError(f"cannot write {path}: no such directory {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise EagerError(f"cannot write {path}: directory {path.parent} is not writable")


def cmd_bench(args) -> int:
    out_json = Path(args.out)
    if out_json.suffix != ".json":
        raise EagerError(f"--out must name a .json file, got {args.out}")
    out_md = out_json.with_suffix(".md")
    targets = [out_json] + ([Path(args.plot)] if args.plot else [])
    for path in targets:
        _check_writable(path)
    cfg = BenchConfig(
        model=args.model or (TEST_MODEL if args.quick else DEFAULT_MODEL),
        quick=args.quick,
        M=args.M,
        threads=args.threads,
        ctx=args.ctx,
        seed=args.seed,
        theta=args.theta,
        peer=args.peer,
    )
    out = run_bench(cfg, progress=lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True))
    command = "eager " + " ".join(sys.argv[1:]) if sys.argv and Path(sys.argv[0]).name == "eager" else ""
    markdown = to_markdown(out, command)
    out_json.write_text(json.dumps(out, indent=2) + "\n")
    out_md.write_text(markdown)
    if args.plot:
        plot(out, args.plot)
    print(markdown, end="")
    print(f"wrote {out_json} and {out_md}" + (f" and {args.plot}" if args.plot else ""))
    return 0

