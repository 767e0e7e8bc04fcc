"""Drawing the next token from one logits row.

Small free functions: the engine calls :func:`sample` for a branch that goes
on normally and :func:`top_two` for a branch that forks.
"""

from __future__ import annotations

import numpy as np

from eager.core.config import SamplingConfig

# tokens per block when locating the sampled token by block sums (see _inverse_cdf)
_CDF_BLOCK = 1024
_UNIT_ROUNDOFF = 2.0**-53  # float64


def top_two(logits: np.ndarray) -> tuple[int, int]:
    """The most and second most probable token ids of one row."""
    pair = np.argpartition(logits, -2)[-2:]
    first, second = (pair[1], pair[0]) if logits[pair[1]] >= logits[pair[0]] else (pair[0], pair[1])
    return int(first), int(second)


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
    n = len(probs)
    if n <= 4 * _CDF_BLOCK:
        return int(np.searchsorted(np.cumsum(probs), target, side="right"))
    whole = n - n % _CDF_BLOCK
    block_sums = probs[:whole].reshape(-1, _CDF_BLOCK).sum(axis=1)
    if whole < n:
        block_sums = np.append(block_sums, probs[whole:].sum())
    ends = np.cumsum(block_sums)  # cumulative mass at the end of each block
    block = int(np.searchsorted(ends, target, side="right"))
    if block < len(ends):
        before = float(ends[block - 1]) if block else 0.0
        start = block * _CDF_BLOCK
        local = np.cumsum(probs[start : start + _CDF_BLOCK])
        local += before
        i = int(np.searchsorted(local, target, side="right"))
        margin = 4.0 * n * _UNIT_ROUNDOFF * float(ends[-1])
        previous = float(local[i - 1]) if i else before
        crosses_clearly = i < len(local) and local[i] > target + margin
        if crosses_clearly and (start + i == 0 or previous < target - margin):
            return start + i
    return int(np.searchsorted(np.cumsum(probs), target, side="right"))


def sample(logits: np.ndarray, cfg: SamplingConfig, rng: np.random.Generator) -> int:
    """One token id drawn from a logits row with the branch's own generator.

    Temperature 0 is greedy. Drawing by inverse CDF with one uniform number per
    token keeps each branch's random stream independent of the others.
    """
    if cfg.temperature == 0:
        return int(np.argmax(logits))
    ids, probs = _tempered_probs(logits, cfg)
    index = min(_inverse_cdf(probs, rng.random() * probs.sum()), len(probs) - 1)
    return index if ids is None else int(ids[index])
