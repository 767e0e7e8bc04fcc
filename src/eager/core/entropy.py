"""Next-token entropy, vectorised over a batch of logits rows.

Both functions take raw logits (before temperature) of shape [batch, vocab]
and return one entropy per row, in nats.
"""

from __future__ import annotations

import numpy as np


def _entropy_of_logits(logits: np.ndarray) -> np.ndarray:
    """H = -sum q log q with q = softmax(logits) along the last axis, in float64.

    Written as H = logsumexp(l) - sum(q * l), which needs one exp per entry
    and stays finite for -inf logits (their q is exactly 0, and their term is
    taken as 0). Two full-size temporaries, both reused in place: at a full
    vocabulary each fresh buffer costs page faults, not just arithmetic.
    """
    shifted = np.subtract(logits, logits.max(axis=-1, keepdims=True), dtype=np.float64)
    weights = np.exp(shifted)
    total = weights.sum(axis=-1)
    if not np.isfinite(shifted).all():
        shifted[~np.isfinite(shifted)] = 0.0
    np.multiply(weights, shifted, out=weights)
    return np.log(total) - weights.sum(axis=-1) / total


def topk_entropy(logits: np.ndarray, k: int = 20) -> np.ndarray:
    """Entropy of the distribution renormalised over the k most probable tokens.

    Renormalising p over the top-k set is the same as a softmax over the top-k
    logits, so the full softmax is never computed: a partial sort picks the k
    largest logits of each row and the entropy is taken over those alone.
    """
    logits = np.asarray(logits, dtype=np.float32)
    k = min(k, logits.shape[-1])
    top = np.partition(logits, logits.shape[-1] - k, axis=-1)[..., -k:]
    return _entropy_of_logits(top.astype(np.float64))


def entropy_from_logprobs(logprobs: np.ndarray) -> np.ndarray:
    """Entropy renormalised over the log-probabilities a server returned, per row.

    A completions server sends log p_i for the top-K tokens of each step.
    Renormalising p over those K is a softmax of their log-probabilities, so
    this equals :func:`topk_entropy` of the full logits whenever the server's K
    tokens are the K most probable. Rows with fewer than K entries are padded
    with -inf (a zero-probability entry adds nothing).
    """
    return _entropy_of_logits(np.asarray(logprobs, dtype=np.float64))


def full_entropy(logits: np.ndarray) -> np.ndarray:
    """Exact entropy of softmax(logits) over the whole vocabulary."""
    return _entropy_of_logits(np.asarray(logits))


def batch_entropy(logits: np.ndarray, mode: str, k: int) -> np.ndarray:
    """Dispatch on the configured mode ("topk" or "full")."""
    return ENTROPY_FUNCTIONS[mode](logits, k)


ENTROPY_FUNCTIONS = {
    "topk": topk_entropy,
    "full": lambda logits, _k: full_entropy(logits),
}
