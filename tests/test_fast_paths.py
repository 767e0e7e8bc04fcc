"""The fast paths of the maths give bit for bit the numbers of the plain expressions."""

from __future__ import annotations

import numpy as np
import pytest

from eager.core.config import SamplingConfig
from eager.core.entropy import full_entropy
from eager.core.sampling import _inverse_cdf, candidate_probs, sample

VOCABS = [1000, 49152, 151936]


def plain_sample(logits: np.ndarray, cfg: SamplingConfig, rng: np.random.Generator) -> int:
    """The textbook draw: softmax(logits / T) over the vocabulary, inverse CDF by a full running sum."""
    scaled = np.asarray(logits, dtype=np.float64) / cfg.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    index = int(np.searchsorted(np.cumsum(probs), rng.random() * probs.sum(), side="right"))
    return min(index, len(probs) - 1)


@pytest.mark.parametrize("vocab", VOCABS)
def test_sampling_draws_the_same_token_as_the_full_running_sum(vocab):
    rng = np.random.default_rng(vocab)
    for trial in range(40):
        logits = rng.normal(0, [0.5, 3.0, 12.0][trial % 3], size=vocab).astype(np.float32)
        cfg = SamplingConfig(temperature=[0.6, 1.0, 0.3][trial % 3])
        seed = int(rng.integers(1 << 31))
        assert sample(logits, cfg, np.random.default_rng(seed)) == plain_sample(logits, cfg, np.random.default_rng(seed))


@pytest.mark.parametrize("vocab", VOCABS)
def test_inverse_cdf_matches_searchsorted_even_on_a_partial_sum(vocab):
    rng = np.random.default_rng(7)
    probs = rng.random(vocab) ** 20
    probs /= probs.sum()
    running = np.cumsum(probs)
    for j in [0, 1, vocab // 2, vocab - 2, vocab - 1, *rng.integers(0, vocab, 20)]:
        s = running[j]
        for target in (s, np.nextafter(s, 0), np.nextafter(s, 2), s * (1 + 1e-13), 0.0, probs.sum()):
            assert _inverse_cdf(probs, float(target)) == np.searchsorted(running, target, side="right")


def test_candidate_probs_are_the_plain_softmax_in_id_order():
    logits = np.random.default_rng(3).normal(0, 4, size=5000).astype(np.float32)
    ids, probs = candidate_probs(logits, SamplingConfig(temperature=0.7))
    scaled = logits.astype(np.float64) / 0.7
    expected = np.exp(scaled - scaled.max())
    expected /= expected.sum()
    assert np.array_equal(ids, np.arange(5000)) and np.array_equal(probs, expected)


def test_full_entropy_is_the_plain_expression_and_leaves_its_input_alone():
    logits = np.random.default_rng(4).normal(0, 3, size=(4, 3000))
    logits[1, :7] = -np.inf
    before = logits.copy()
    shifted = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    total = weights.sum(axis=-1)
    expected = np.log(total) - (weights * np.where(np.isfinite(shifted), shifted, 0.0)).sum(axis=-1) / total
    assert np.array_equal(full_entropy(logits), expected)
    assert np.array_equal(logits, before, equal_nan=True)
