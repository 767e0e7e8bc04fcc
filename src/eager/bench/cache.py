"""(d) The fork and the cache: ``llama_memory_seq_cp`` against a decode step and
against prefilling the prefix again; KV cells against the sum of sequence
lengths, cross-checked by filling a small context until llama.cpp reports it full.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from eager.backends.base import Backend, CacheFull, StepItem
from eager.bench.clock import spread
from eager.bench.config import BenchConfig


def _timed_step(backend: Backend, items: list[StepItem]) -> float:
    start = time.perf_counter()
    backend.step(items)
    return time.perf_counter() - start


def measure_fork_cost(backend: Backend, prefix_ids: Sequence[int], cfg: BenchConfig) -> dict[str, Any]:
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
        "fork_detail": {"prefix_tokens": n, "sequences": M, "new_tokens_each": steps, "kv_bytes_per_cell": backend.kv_bytes_per_cell,
                        "ms_over_repeats": {"fork": spread(fork_times, 1e3), "step": spread(step_times, 1e3)}},
    }


def measure_cache_fill(backend: Backend, prefix_ids: Sequence[int], cfg: BenchConfig) -> dict[str, Any]:
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
