"""The whole bench on one model: load, measure each section, check the targets.

:func:`run_bench` returns one JSON-ready dict and prints nothing; progress
goes to an optional callback and to the log.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from eager.api import resolve_theta
from eager.backends.base import Backend
from eager.bench.cache import measure_cache_fill, measure_fork_cost
from eager.bench.config import BenchConfig
from eager.bench.kv import measure_kv_options
from eager.bench.measure import measure_eager_vs_parallel, measure_engine_vs_raw, measure_entropy_overhead, measure_scaling
from eager.bench.peer import measure_transformers
from eager.bench.raw import RawLoop
from eager.errors import EagerError
from eager.eval.datasets import format_prompt, load_problems
from eager.models import resolve_model

log = logging.getLogger(__name__)

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

TARGETS = {  # the engine issue's targets: no slower than raw llama.cpp, a cheap step, time saved at least as tokens
    "engine_vs_raw": (">=", 0.95),
    "entropy_overhead": ("<", 0.03),
    "wall_over_token_ratio": ("<=", 1.0),
}

PEER_OFF = "skipped: the transformers peer is off (peer=False)"

Progress = Callable[[str], None]


def _prefix(backend: Backend, texts: Sequence[str], n: int) -> list[int]:
    """A prompt of exactly n tokens made of real questions."""
    ids: list[int] = []
    for text in texts:
        ids += backend.tokenizer.encode_prompt(text, False)
        if len(ids) >= n:
            return ids[:n]
    raise EagerError(f"the bench questions make only {len(ids)} tokens, fewer than the {n}-token prefix")


def _reporter(progress: Progress | None) -> Progress:
    def say(message: str) -> None:
        log.info("bench: %s", message)
        if progress is not None:
            progress(message)

    return say


def _timed_sections(out: dict[str, Any], sections: dict[str, Callable[[], dict[str, Any]]], say: Progress) -> None:
    """Run each section, merge its numbers into ``out`` and its seconds into ``out["section_s"]``."""
    for name, measure in sections.items():
        say(name)
        start = time.perf_counter()
        out.update(measure())
        out["section_s"][name[0]] = time.perf_counter() - start


def _header(cfg: BenchConfig, path: Path, backend: Backend) -> dict[str, Any]:
    return {
        "model": cfg.model_name,
        "model_file": path.name,
        "quick": cfg.quick,
        "M": cfg.M,
        "threads": cfg.n_threads,
        "n_ctx": backend.n_ctx,
        "n_batch": backend.n_batch,
        "vocab": backend.vocab_size,
        "sizes": asdict(cfg.sizes),
    }


def _llama_sections(cfg: BenchConfig, path: Path, prompts: list[str], questions: list[str], say: Progress) -> tuple[dict[str, Any], list[int]]:
    """Sections a, b, c, d and f, on llama.cpp contexts closed before returning; and the prompt's ids."""
    from eager.backends.llama import LlamaBackend

    say(f"loading {cfg.model_name}")
    n_batch = max(cfg.n_batch, cfg.max_sequences)
    with ExitStack() as handles:
        backend = LlamaBackend(str(path), n_ctx=cfg.ctx, max_sequences=cfg.max_sequences, n_batch=n_batch, n_threads=cfg.n_threads)
        handles.callback(backend.close)
        raw = RawLoop(str(path), n_ctx=cfg.ctx, n_batch=backend.n_batch, n_seq_max=cfg.max_sequences, n_threads=cfg.n_threads)
        handles.callback(raw.close)
        fill = LlamaBackend(str(path), n_ctx=cfg.fill_ctx, max_sequences=cfg.M, n_batch=backend.n_batch, n_threads=cfg.n_threads)
        handles.callback(fill.close)
        prompt_ids = backend.tokenizer.encode_prompt(prompts[0], True)
        prefix_ids = _prefix(backend, questions, cfg.prefix_tokens)
        out = {**_header(cfg, path, backend), "section_s": {}}
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
        _timed_sections(out, sections, say)
    return out, prompt_ids


def run_bench(cfg: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Every measurement on one model; returns one JSON-ready dict.

    ``progress`` is called with a short line as each section starts.
    """
    say = _reporter(progress)
    path = resolve_model(cfg.model_name)
    theta = resolve_theta(cfg.theta, model=cfg.model_name)
    say(theta.note)
    cfg = replace(cfg, theta=theta.value)
    problems = load_problems("gsm8k", limit=max(max(cfg.scaling_prompts), cfg.sizes.problems, cfg.sizes.kv_problems, 20))
    prompts = [format_prompt(p) for p in problems]
    out, prompt_ids = _llama_sections(cfg, path, prompts, [p.question for p in problems], say)
    if cfg.kv:
        kv = {"g. KV cache type and flash attention": lambda: measure_kv_options(path, prompts[: cfg.sizes.kv_problems], cfg)}
        _timed_sections(out, kv, say)
    if cfg.peer:
        peer = {"e. transformers peer (its load is not timed)": lambda: measure_transformers(path, prompt_ids, cfg, out["engine_tokens_per_s"])}
        _timed_sections(out, peer, say)
    else:
        out.update({"vs_transformers": None, "transformers_message": PEER_OFF})
    out["theta_source"] = out["eager_detail"]["theta_source"] = theta.source
    out["targets"] = targets_of(out)
    return out


def targets_of(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target of :data:`TARGETS`: its value in ``out``, the goal and whether it is met."""
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
