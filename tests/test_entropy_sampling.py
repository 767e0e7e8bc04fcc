"""The maths: entropy and sampling as pure functions of logits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eager.core.config import SamplingConfig
from eager.core.entropy import batch_entropy, full_entropy, topk_entropy
from eager.core.sampling import candidate_probs, sample, top_two


def reference_entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_uniform_rows_have_entropy_log_k_and_log_vocab():
    logits = np.zeros((2, 100), dtype=np.float32)
    np.testing.assert_allclose(topk_entropy(logits, 20), math.log(20), rtol=1e-6)
    np.testing.assert_allclose(full_entropy(logits), math.log(100), rtol=1e-6)


def test_topk_entropy_renormalises_over_the_k_most_probable_tokens():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(5, 300)).astype(np.float32)
    got = topk_entropy(logits, 20)
    for row, h in zip(logits, got):
        p = np.exp(row - row.max())
        p /= p.sum()
        top = np.sort(p)[-20:]
        assert h == pytest.approx(reference_entropy(top / top.sum()), rel=1e-5)


def test_full_entropy_matches_the_definition_and_tolerates_minus_infinity():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(4, 50))
    logits[0, :10] = -np.inf
    for row, h in zip(logits, full_entropy(logits)):
        p = np.exp(row - row.max())
        p /= p.sum()
        assert h == pytest.approx(reference_entropy(p), rel=1e-9)


def test_a_one_hot_row_has_zero_entropy():
    logits = np.full((1, 64), -1e4, dtype=np.float32)
    logits[0, 3] = 10
    assert topk_entropy(logits, 20)[0] == pytest.approx(0, abs=1e-6)
    assert full_entropy(logits)[0] == pytest.approx(0, abs=1e-6)


def test_k_larger_than_the_vocabulary_is_the_full_entropy():
    logits = np.random.default_rng(2).normal(size=(3, 10))
    np.testing.assert_allclose(topk_entropy(logits, 50), full_entropy(logits), rtol=1e-6)
    np.testing.assert_allclose(batch_entropy(logits, "full", 20), full_entropy(logits))


def test_top_two_orders_the_two_largest_logits():
    row = np.array([0.1, 5.0, 3.0, 4.9, -1.0])
    assert top_two(row) == (1, 3)
    assert top_two(np.array([2.0, 7.0])) == (1, 0)


def test_temperature_zero_is_greedy():
    row = np.array([0.0, 1.0, 3.0, 2.0])
    cfg = SamplingConfig(temperature=0)
    assert {sample(row, cfg, np.random.default_rng(s)) for s in range(20)} == {2}


def test_top_k_one_and_tiny_top_p_reduce_to_the_argmax():
    row = np.array([0.0, 1.0, 3.0, 2.0])
    for cfg in (SamplingConfig(top_k=1), SamplingConfig(top_p=0.01)):
        assert {sample(row, cfg, np.random.default_rng(s)) for s in range(20)} == {2}


def test_top_p_keeps_the_smallest_prefix_reaching_the_mass():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    ids, probs = candidate_probs(logits, SamplingConfig(temperature=1.0, top_p=0.75))
    assert list(ids) == [0, 1]
    np.testing.assert_allclose(probs, [0.5 / 0.8, 0.3 / 0.8])


def test_samples_follow_the_tempered_distribution():
    logits = np.log(np.array([0.6, 0.3, 0.1]))
    cfg = SamplingConfig(temperature=1.0)
    rng = np.random.default_rng(3)
    counts = np.bincount([sample(logits, cfg, rng) for _ in range(6000)], minlength=3) / 6000
    np.testing.assert_allclose(counts, [0.6, 0.3, 0.1], atol=0.03)
    # a lower temperature sharpens: p_i ∝ p_i^(1/T)
    _, probs = candidate_probs(logits, SamplingConfig(temperature=0.5))
    sharp = np.array([0.6, 0.3, 0.1]) ** 2
    np.testing.assert_allclose(probs, sharp / sharp.sum())


def test_the_same_generator_state_draws_the_same_token():
    row = np.random.default_rng(4).normal(size=1000)
    cfg = SamplingConfig(temperature=0.6)
    a = [sample(row, cfg, np.random.default_rng(9)) for _ in range(3)]
    assert len(set(a)) == 1
