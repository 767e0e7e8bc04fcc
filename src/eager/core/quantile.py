"""A running percentile: the P99 of a growing history without re-sorting it.

theta_eff = max(theta, P99 of a prompt's entropies so far). Recomputing
``np.percentile`` over the whole history at every step costs O(n) per step
(O(n^2) per prompt). :class:`RunningPercentile` keeps the history split in
two heaps around the order statistic the percentile needs: a max-heap of the
lowest ``i + 1`` values and a min-heap of the rest, where ``i`` is the index
below the percentile's virtual position. Adding a value is O(log n); reading
the percentile is O(1).

The value equals ``np.percentile(history, q)`` (numpy's default "linear"
method) exactly, bit for bit: the virtual index and the interpolation are
computed with numpy's own expressions.
"""

from __future__ import annotations

import heapq
import math


def _virtual_index(n: int, quantile: float) -> float:
    # numpy's "linear" method: (n - 1) * q
    return (n - 1) * quantile


def _lerp(a: float, b: float, t: float) -> float:
    # numpy's _lerp: a + (b - a) * t, taken from b's side when t >= 0.5
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


class RunningPercentile:
    """``np.percentile(values, percent)`` of everything added so far, kept up to date."""

    def __init__(self, percent: float = 99.0) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be in [0, 100], got {percent}")
        self.quantile = percent / 100
        self._low: list[float] = []  # max-heap (negated): the lowest values, up to the index below
        self._high: list[float] = []  # min-heap: the rest
        self.n = 0

    def add(self, value: float) -> None:
        value = float(value)
        if self._low and value < -self._low[0]:
            heapq.heappush(self._low, -value)
        else:
            heapq.heappush(self._high, value)
        self.n += 1
        self._rebalance()

    def extend(self, values) -> None:
        for value in values:
            self.add(value)

    def _below(self) -> int:
        """How many values the low heap must hold: the floor of the virtual index, plus one."""
        index = _virtual_index(self.n, self.quantile)
        return min(max(int(math.floor(index)), 0), self.n - 1) + 1

    def _rebalance(self) -> None:
        want = self._below()
        while len(self._low) > want:
            heapq.heappush(self._high, -heapq.heappop(self._low))
        while len(self._low) < want:
            heapq.heappush(self._low, -heapq.heappop(self._high))

    def value(self) -> float:
        if not self.n:
            raise ValueError("no values yet")
        index = _virtual_index(self.n, self.quantile)
        below = -self._low[0]
        if index >= self.n - 1 or not self._high:  # at the top: numpy takes the largest value
            return below
        t = index - math.floor(index)
        return _lerp(below, self._high[0], t)
