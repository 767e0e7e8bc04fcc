"""The local engine's top-K entropies along a token sequence (a helper module, not a test file).

The remote tests compare a server's streamed entropies with these, on the
same packaged model, token by token.
"""

from __future__ import annotations

from typing import Sequence

from eager.backends.base import StepItem
from eager.core.entropy import topk_entropy


def local_topk_entropies(backend, prompt: Sequence[int], tokens: Sequence[int], k: int = 20) -> list[float]:
    """H of the step after ``prompt``, then after each of ``tokens`` but the last, on ``backend``."""
    handle = backend.new_sequence()
    try:
        entropies = [float(topk_entropy(backend.step([StepItem(handle, tuple(prompt))]), k)[0])]
        for token in tokens[:-1]:
            entropies.append(float(topk_entropy(backend.step([StepItem(handle, (token,))]), k)[0]))
    finally:
        backend.release(handle)
    return entropies
