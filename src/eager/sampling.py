"""Drawing the next token from one logits row.

Small free functions: the engine calls :func:`sample` for a branch that goes
on normally and :func:`top_two` for a branch that forks.
"""

from __future__ import annotations

import numpy as np

from eager.config import SamplingConfig


def top_two(logits: np.ndarray) -> tuple[int, int]:
    """The most and second most probable token ids of one row."""
    pair = np.argpartition(logits, -2)[-2:]
    first, second = (pair[1], pair[0]) if logits[pair[1]] >= logits[pair[0]] else (pair[0], pair[1])
    return int(first), int(second)


def candidate_probs(logits: np.ndarray, cfg: SamplingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and their probabilities after temperature, top-k and top-p.

    Ids come sorted by decreasing probability when top-k or top-p is active,
    which top-p needs to cut the tail; otherwise the whole vocabulary is kept
    in id order (no sort needed).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if cfg.top_k and cfg.top_k < logits.shape[-1]:
        ids = np.argpartition(logits, -cfg.top_k)[-cfg.top_k :]
    else:
        ids = np.arange(logits.shape[-1])
    scaled = logits[ids] / cfg.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if cfg.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        ids, probs = ids[order], probs[order]
        # keep the smallest prefix whose mass reaches top_p (always >= 1 token)
        keep = int(np.searchsorted(np.cumsum(probs), cfg.top_p)) + 1
        ids, probs = ids[:keep], probs[:keep] / probs[:keep].sum()
    return ids, probs


def sample(logits: np.ndarray, cfg: SamplingConfig, rng: np.random.Generator) -> int:
    """One token id drawn from a logits row with the branch's own generator.

    Temperature 0 is greedy. Drawing by inverse CDF with one uniform number per
    token keeps each branch's random stream independent of the others.
    """
    if cfg.temperature == 0:
        return int(np.argmax(logits))
    ids, probs = candidate_probs(logits, cfg)
    index = int(np.searchsorted(np.cumsum(probs), rng.random() * probs.sum(), side="right"))
    return int(ids[min(index, len(ids) - 1)])
