"""Timing: the fastest of repeats, per-step clocks and the steady time of a run.

On a shared machine other work comes in bursts; the minimum over repeats is
the estimate least disturbed by it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np


def fastest_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` calls of fn, after one warm-up call."""
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


def clocked_runs(fn: Callable[[StepClock], Any], repeats: int) -> tuple[Any, list[list[float]]]:
    """(the last run's value, each run's step times); fn runs with a fresh clock as on_step."""
    runs, value = [], None
    for _ in range(max(repeats, 1)):
        clock = StepClock()
        value = fn(clock)
        runs.append(clock.stop())
    return value, runs
