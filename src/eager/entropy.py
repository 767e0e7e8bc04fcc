"""Next-token entropy, vectorised over a batch of logits rows.

Both functions take raw logits (before temperature) of shape [batch, vocab]
and return one entropy per row, in nats.
"""

from __future__ import annotations

import numpy as np


def _entropy_of_logits(logits: np.ndarray) -> np.ndarray:
    """H = -sum q log q with q = softmax(logits) along the last axis.

    Written as H = logsumexp(l) - sum(q * l), which needs one exp per entry
    and stays finite for -inf logits (their q is exactly 0).
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    total = weights.sum(axis=-1)
    finite = np.where(np.isfinite(shifted), shifted, 0.0)
    return np.log(total) - (weights * finite).sum(axis=-1) / total


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


def full_entropy(logits: np.ndarray) -> np.ndarray:
    """Exact entropy of softmax(logits) over the whole vocabulary."""
    return _entropy_of_logits(np.asarray(logits, dtype=np.float64))


def batch_entropy(logits: np.ndarray, mode: str, k: int) -> np.ndarray:
    """Dispatch on the configured mode ("topk" or "full")."""
    return ENTROPY_FUNCTIONS[mode](logits, k)


ENTROPY_FUNCTIONS = {
    "topk": topk_entropy,
    "full": lambda logits, _k: full_entropy(logits),
}
