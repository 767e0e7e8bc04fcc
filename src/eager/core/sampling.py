"""Drawing the next token from one logits row.

Small free functions: the engine calls :func:`sample` for a branch that goes
on normally and :func:`top_two` for a branch that forks.

:func:`sample` returns exactly the token of the textbook computation,
:func:`_draw_exactly` (a float64 softmax of logits / T over the vocabulary,
then the inverse CDF by a running sum), for the same row, configuration and
generator state. Without top-k and top-p it first tries :func:`_draw_by_cut`,
which weighs only the tokens that can matter and proves that its token is
the textbook one; when it cannot prove it, the textbook computation decides.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from eager.core.config import SamplingConfig

# tokens per block when locating the sampled token by block sums (see _inverse_cdf)
_CDF_BLOCK = 1024
_UNIT_ROUNDOFF = 2.0**-53  # float64
# the fast draw weighs the tokens within these many nats of the top one: a narrow cut, then a wide one
_CUTS = (24.0, 36.0)
# relative error allowed to numpy's float64 exp (it is within a few ulps; this is 256)
_EXP_ERROR = 2.0**-45
# above this share of the vocabulary within a cut, weigh the whole row rather than gather it
_GATHER_SHARE = 0.25
# beyond this relative error of the fast weights, leave the row to the textbook draw
_MAX_WEIGHT_ERROR = 1e-9


def top_two(logits: np.ndarray) -> tuple[int, int]:
    """The most and second most probable token ids of one row."""
    pair = np.argpartition(logits, -2)[-2:]
    first, second = (pair[1], pair[0]) if logits[pair[1]] >= logits[pair[0]] else (pair[0], pair[1])
    return int(first), int(second)


def probabilities(logits: np.ndarray, ids: tuple[int, ...]) -> tuple[float, ...]:
    """The model's probabilities of ``ids`` (softmax of the whole row at T = 1), for display."""
    row = logits.astype(np.float64)
    top = row.max()
    log_total = top + math.log(float(np.exp(row - top).sum()))
    return tuple(math.exp(float(row[i]) - log_total) for i in ids)


def _tempered_probs(logits: np.ndarray, cfg: SamplingConfig) -> tuple[np.ndarray | None, np.ndarray]:
    """softmax(logits / T) over the candidates; ids None means the whole vocabulary in id order.

    Float64 throughout, in place where the values allow it: the numbers are
    exactly those of the textbook expression ``exp(s - s.max()) / sum``.
    """
    if cfg.top_k and cfg.top_k < logits.shape[-1]:
        wide = np.asarray(logits, dtype=np.float64)
        ids = np.argpartition(wide, -cfg.top_k)[-cfg.top_k :]
        probs = wide[ids] / cfg.temperature
    else:
        ids = None
        probs = np.divide(logits, cfg.temperature, dtype=np.float64)  # widens to float64 first
    np.subtract(probs, probs.max(), out=probs)
    np.exp(probs, out=probs)
    probs /= probs.sum()
    if cfg.top_p < 1.0:
        ids = np.arange(len(probs)) if ids is None else ids
        order = np.argsort(-probs, kind="stable")
        ids, probs = ids[order], probs[order]
        # keep the smallest prefix whose mass reaches top_p (always >= 1 token)
        keep = int(np.searchsorted(np.cumsum(probs), cfg.top_p)) + 1
        ids, probs = ids[:keep], probs[:keep] / probs[:keep].sum()
    return ids, probs


def candidate_probs(logits: np.ndarray, cfg: SamplingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and their probabilities after temperature, top-k and top-p.

    Ids come sorted by decreasing probability when top-p is active, which it
    needs to cut the tail; otherwise the whole vocabulary is kept in id order
    (no sort needed).
    """
    ids, probs = _tempered_probs(logits, cfg)
    return (np.arange(len(probs)) if ids is None else ids), probs


def _block_ends(weights: np.ndarray) -> tuple[np.ndarray, int]:
    """Running sums at the end of each block of ``_CDF_BLOCK`` entries, and the block size.

    A short array is one entry per block: its block ends are its running sum.
    """
    n = len(weights)
    if n <= 4 * _CDF_BLOCK:
        return np.cumsum(weights), 1
    whole = n - n % _CDF_BLOCK
    block_sums = weights[:whole].reshape(-1, _CDF_BLOCK).sum(axis=1)
    if whole < n:
        block_sums = np.append(block_sums, weights[whole:].sum())
    return np.cumsum(block_sums), _CDF_BLOCK


def _first_above(weights: np.ndarray, ends: np.ndarray, block: int, x: float) -> tuple[int, float, float]:
    """(j, below, at): the first index whose running sum passes x, and sums through j - 1 and j.

    The block ends find the block, and only that block's running sum is
    taken. ``below`` and ``at`` are rounded sums of ``weights[:j]`` and
    ``weights[:j + 1]``; j == len(weights) when x is not below the total.
    """
    b = int(np.searchsorted(ends, x, side="right"))
    if b == len(ends):
        return len(weights), float(ends[-1]), math.inf
    before = float(ends[b - 1]) if b else 0.0
    if block == 1:
        return b, before, float(ends[b])
    start = b * block
    local = np.cumsum(weights[start : start + block])
    local += before
    i = min(int(np.searchsorted(local, x, side="right")), len(local) - 1)
    return start + i, (float(local[i - 1]) if i else before), float(local[i])


def _inverse_cdf(probs: np.ndarray, target: float) -> int:
    """``np.searchsorted(np.cumsum(probs), target, side="right")``, without the full running sum.

    A running sum is sequential, one add after another, and over a vocabulary
    of 150k tokens it is most of the sampling time. Instead, vectorised block
    sums find the block where the cumulative mass passes ``target`` and only
    that block's running sum is taken. Its rounding differs from the full
    running sum's, but each is within n * u * total of the exact prefix sums
    (u = 2^-53; every term is >= 0), so when the two partial sums around the
    crossing are further than twice that from ``target`` both searches return
    the same index. Otherwise (about once in 10^10 draws) the full running sum
    decides, so the result is always the same token.
    """
    ends, block = _block_ends(probs)
    if block == 1:  # the block ends are the full running sum
        return int(np.searchsorted(ends, target, side="right"))
    j, below, at = _first_above(probs, ends, block, target)
    margin = 4.0 * len(probs) * _UNIT_ROUNDOFF * float(ends[-1])
    if j < len(probs) and at > target + margin and (j == 0 or below < target - margin):
        return j
    return int(np.searchsorted(np.cumsum(probs), target, side="right"))


def _draw_exactly(logits: np.ndarray, cfg: SamplingConfig, u: float) -> int:
    """The textbook draw for the uniform number u: inverse CDF of the tempered softmax."""
    ids, probs = _tempered_probs(logits, cfg)
    index = min(_inverse_cdf(probs, u * probs.sum()), len(probs) - 1)
    return index if ids is None else int(ids[index])


class _Cut(NamedTuple):
    """The tokens within ``nats`` of the top one at temperature T, found by comparing raw logits."""

    within: np.ndarray  # boolean mask: l >= floor
    count: int
    span: float  # every token outside has (l - max) / T < -span


def _cut(row: np.ndarray, top: float, temperature: float, nats: float) -> _Cut:
    """Compare with ``floor = max - T * nats`` in the row's own dtype.

    span is recomputed from the floor actually used, so every token left
    out has (l - max) / T < -span however the floor rounded.
    """
    floor = row.dtype.type(top - temperature * nats)
    within = row >= floor
    return _Cut(within, int(np.count_nonzero(within)), (top - float(floor)) / temperature)


def _mass_bound(tokens: int, span: float) -> float:
    """A bound on the sum of ``tokens`` weights exp(d) with d < -span, as either side rounds them.

    The rounding of d (< 1e-9 nats, which :func:`_certified_index` checks)
    and of exp fit in the factor 1 + 1e-6; that of span in the 1 - 1e-12.
    """
    return tokens * math.exp(-span * (1.0 - 1e-12)) * (1.0 + 1e-6)


def _candidate_sets(row: np.ndarray, top: float, temperature: float) -> Iterator[tuple[np.ndarray | None, float, float]]:
    """(ids, span, tail) to try in turn; ids None means every token, in id order.

    Each set bounds the weight of the tokens it leaves out by their count
    times e^-span (``tail``). First the narrow cut: few tokens to gather, and
    a tail that is rarely too heavy to settle the draw; then the wide one. A
    cut holding more than a quarter of the row is not gathered: the whole
    row is weighed instead, which costs less. Then the tokens more than
    ``_CUTS[1]`` nats below the top (no need to find them) are the tail:
    each weighs < e^-_CUTS[1] on both sides, and the rest are within span.
    """
    n, most = len(row), _GATHER_SHARE * len(row)
    narrow = _cut(row, top, temperature, _CUTS[0])
    if narrow.count > most:
        yield None, _CUTS[1], _mass_bound(n, _CUTS[1])
        return
    yield np.flatnonzero(narrow.within), narrow.span, _mass_bound(n - narrow.count, narrow.span)
    wide = _cut(row, top, temperature, _CUTS[1])
    if wide.count > most:
        yield None, _CUTS[1], _mass_bound(n, _CUTS[1])
    else:
        yield np.flatnonzero(wide.within), wide.span, _mass_bound(n - wide.count, wide.span)


def _weigh(row: np.ndarray, ids: np.ndarray | None, top: float, temperature: float) -> np.ndarray:
    """exp((l - max) / T) in float64 for the tokens ids (every token when None)."""
    weights = (row if ids is None else row[ids]).astype(np.float64)  # then in place: faster than a mixed-type subtract
    weights -= top
    weights *= 1.0 / temperature
    return np.exp(weights, out=weights)


def _certified_index(weights: np.ndarray, tail: float, span: float, scale: float, u: float, vocab: int) -> int | None:
    """The index into ``weights`` of the textbook draw's token for u, or None if unsure.

    The textbook draw (n = vocab, u_r = 2^-53) normalises w_i = exp(d_i)
    by their rounded sum, takes t = u * (sum of the rounded p_i) and picks
    the first j whose rounded running sum c_j exceeds t. With Z = sum w_i
    and Q_j = (w_0 + ... + w_j) / Z, every rounded sum of n non-negative
    terms is within n * u_r of the exact one, so |c_j - Q_j| <= (2n + 2) u_r
    and |t - u| <= (2n + 3) u_r: it picks j whenever Q_{j-1} <= u - E and
    Q_j > u + E, E = (4n + 5) u_r. ``slack`` is twice that, the spare
    covering the rounding of the few checks below.

    Our weights are not those w_i: for the tokens weighed (|d| < span) they
    differ by a relative ``weight_error`` (l / T is rounded in another order,
    by < u_r (4 |max| / T + 8 span) nats, and exp may differ by 2^-45 on each
    side); the others hold less than ``tail`` in all, on both sides. With
    ``eps`` adding the rounding of our own sums, A (1 - eps) - tail <= F <=
    A (1 + eps) + tail for each prefix F of the w and our rounded sum A of
    the weighed tokens in it (a token left out between two weighed ones is
    inside the tail term), and likewise for Z. So j is certain when A_j's
    lower bound over Z's upper bound passes u + slack and A_{j-1}'s upper
    bound over Z's lower bound stays at or below u - slack. A draw fails this
    only within about 2 (slack + eps + tail) of a step of the CDF.
    """
    m = len(weights)
    weight_error = 1.01 * (_UNIT_ROUNDOFF * (4.0 * scale + 8.0 * span) + 2.01 * _EXP_ERROR)
    if not weight_error <= _MAX_WEIGHT_ERROR:  # |max| / T beyond ~10^6: the textbook draw decides
        return None
    eps = 1.01 * (weight_error + (m + 4) * _UNIT_ROUNDOFF)
    slack = 8.0 * (vocab + 4) * _UNIT_ROUNDOFF
    ends, block = _block_ends(weights)
    total = float(ends[-1])
    z_low, z_high = total * (1.0 - eps) - tail, total * (1.0 + eps) + tail
    j, below, at = _first_above(weights, ends, block, ((u + slack) * z_high + tail) / (1.0 - eps))
    passes = at * (1.0 - eps) - tail > (u + slack) * z_high
    clear_before = z_low > 0 and below * (1.0 + eps) + tail <= (u - slack) * z_low
    return j if j < m and passes and clear_before else None


def _draw_by_cut(row: np.ndarray, temperature: float, u: float) -> int | None:
    """The textbook draw's token for u from the tokens within a cut, or None if not certain.

    A token 36 nats below the top one weighs less than e^-36 of it, so all of
    them together hold less than n * e^-36 (4e-11 at 150k tokens) of the
    mass: the sampled token is almost always within the cut, and
    :func:`_certified_index` proves that it is the textbook one or declines.
    """
    top = float(row.max())
    if not math.isfinite(top):
        return None
    for ids, span, tail in _candidate_sets(row, top, temperature):
        index = _certified_index(_weigh(row, ids, top, temperature), tail, span, abs(top) / temperature, u, len(row))
        if index is not None:
            return index if ids is None else int(ids[index])
    return None


def _uses_whole_vocabulary(cfg: SamplingConfig, vocab: int) -> bool:
    return not (cfg.top_k and cfg.top_k < vocab) and cfg.top_p >= 1.0


def sample(logits: np.ndarray, cfg: SamplingConfig, rng: np.random.Generator) -> int:
    """One token id drawn from a logits row with the branch's own generator.

    Temperature 0 is greedy. Drawing by inverse CDF with one uniform number per
    token keeps each branch's random stream independent of the others. The
    token is always the textbook one, :func:`_draw_exactly`'s for that number;
    :func:`_draw_by_cut` usually finds it at a fraction of the cost.
    """
    if cfg.temperature == 0:
        return int(np.argmax(logits))
    u = rng.random()
    row = np.asarray(logits)
    if row.ndim == 1 and row.dtype.kind == "f" and _uses_whole_vocabulary(cfg, len(row)):
        token = _draw_by_cut(row, cfg.temperature, u)
        if token is not None:
            return token
    return _draw_exactly(row, cfg, u)
