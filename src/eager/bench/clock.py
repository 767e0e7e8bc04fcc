"""Timing: the fastest of repeats, per-step clocks and the steady time of a run.

On a shared machine other work comes in bursts; the minimum over repeats is
the estimate least disturbed by it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np


def repeated_seconds(fn: Callable[[], Any], repeats: int) -> list[float]:
    """The time of each of ``repeats`` calls of fn, after one warm-up call."""
    fn()  # warm caches and allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def fastest_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` calls of fn, after one warm-up call."""
    return min(repeated_seconds(fn, repeats))


def spread(values: Sequence[float], scale: float = 1.0) -> dict[str, Any]:
    """``{"min", "median", "max", "n"}`` of repeated measurements (times ``scale``, e.g. 1e3 for ms)."""
    data = np.asarray(values, dtype=np.float64) * scale
    return {"min": float(data.min()), "median": float(np.median(data)), "max": float(data.max()), "n": int(data.size)}


class StepClock:
    """Wall-clock of every step of a run: an engine's ``on_step`` callback, or called by hand.

    The first segment runs from the clock's creation to the first step's end,
    the last from the last step to :meth:`stop`. Given the engine's
    ``StepStats``, it also keeps the prompts in flight at each step (those
    still in flight after it plus those it finished) and the run's
    preemptions (:meth:`occupancy`).
    """

    def __init__(self) -> None:
        self.marks = [time.perf_counter()]
        self.in_flight: list[int] = []
        self.preemptions = 0
        self._done = 0

    def __call__(self, stats: Any = None) -> None:
        self.marks.append(time.perf_counter())
        if stats is not None:
            self.in_flight.append(stats.prompts_in_flight + stats.prompts_done - self._done)
            self._done = stats.prompts_done
            self.preemptions = stats.preemptions  # the engine's count so far

    def stop(self) -> list[float]:
        self.marks.append(time.perf_counter())
        return list(np.diff(self.marks))

    def occupancy(self) -> dict[str, Any]:
        """Prompts in flight over the steps (most and mean) and the trees preempted or branches parked."""
        counts = self.in_flight or [0]
        return {"prompts_in_flight_max": max(counts), "prompts_in_flight_mean": float(np.mean(counts)), "preemptions": self.preemptions}


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


def clocked_runs(fn: Callable[[StepClock], Any], repeats: int) -> tuple[Any, list[list[float]], dict[str, Any]]:
    """(the last run's value, each run's step times, its :meth:`StepClock.occupancy`);
    fn runs with a fresh clock as on_step."""
    runs, value, clock = [], None, StepClock()
    for _ in range(max(repeats, 1)):
        clock = StepClock()
        value = fn(clock)
        runs.append(clock.stop())
    return value, runs, clock.occupancy()
