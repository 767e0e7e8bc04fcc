"""The fast paths of the maths give bit for bit the numbers of the plain expressions."""

from __future__ import annotations

import numpy as np
import pytest

from eager.core.config import SamplingConfig
from eager.core.entropy import _top_k_values, batch_entropy, full_entropy, topk_entropy
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


def partition_topk_entropy(logits: np.ndarray, k: int) -> np.ndarray:
    """The top-k entropy as it was: a partition of the whole row, sums in the partition's order."""
    top = np.partition(np.asarray(logits, dtype=np.float32), logits.shape[-1] - k, axis=-1)[..., -k:].astype(np.float64)
    shifted = top - top.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    total = weights.sum(axis=-1)
    return np.log(total) - (weights * np.where(np.isfinite(shifted), shifted, 0.0)).sum(axis=-1) / total


def awkward_rows(vocab: int, k: int) -> np.ndarray:
    """Ties at the k-th value, all-equal and -inf rows, the top k in one group, the top past the last group."""
    rng = np.random.default_rng(vocab)
    rows = rng.normal(0, 3, size=(10, vocab)).astype(np.float32)
    rows[1] = rng.integers(0, 4, vocab)
    rows[2] = 0.0
    rows[3, rng.random(vocab) < 0.7] = -np.inf
    rows[4, : vocab - 5] = -np.inf
    columns = vocab // 64
    if columns:  # the k largest values all in one group of the layout (one column, stride vocab // 64)
        rows[5, 7 : 7 + columns * min(k, 64) : columns] = 50 + np.arange(min(k, 64))
    rows[6, -1] = 99.0  # past the last whole group when 64 does not divide vocab
    rows[7, rng.integers(0, vocab, 3 * k)] = 20.0  # many ties above the rest
    return rows


@pytest.mark.parametrize("vocab", [24, 100, 1000, 5000, 5123, 49152, 151936])
@pytest.mark.parametrize("k", [1, 20, 64])
def test_the_top_k_values_are_the_k_largest_entries_of_each_row(vocab, k):
    rows = awkward_rows(vocab, k)
    k = min(k, vocab)
    assert np.array_equal(_top_k_values(rows, k), np.sort(rows, axis=-1)[:, vocab - k :])


@pytest.mark.parametrize("vocab", [24, 1000, 5123, 49152, 151936])
def test_topk_entropy_of_a_row_alone_equals_its_entropy_in_any_batch_bit_for_bit(vocab):
    rows = awkward_rows(vocab, 20)
    batch = topk_entropy(rows, 20)
    assert np.array_equal(batch, batch_entropy(rows, "topk", 20))
    for i in range(len(rows)):
        assert topk_entropy(rows[i : i + 1], 20)[0] == batch[i]
        assert batch_entropy(rows[[i, (i + 3) % len(rows)]], "topk", 20)[0] == batch[i]
    assert topk_entropy(rows[::-1], 20)[::-1].tolist() == batch.tolist()


@pytest.mark.parametrize("vocab", [24, 1000, 49152, 151936])
def test_topk_entropy_differs_from_the_partition_formula_only_in_the_last_bits(vocab):
    rows = awkward_rows(vocab, 20)
    np.testing.assert_allclose(topk_entropy(rows, 20), partition_topk_entropy(rows, 20), rtol=4e-15, atol=1e-15)


@pytest.mark.parametrize("vocab", [24, 1000, 151936])
def test_topk_entropy_depends_on_the_values_alone_not_on_their_token_order(vocab):
    rows = awkward_rows(vocab, 20)
    shuffled = np.random.default_rng(1).permuted(rows, axis=-1)
    assert np.array_equal(topk_entropy(shuffled, 20), topk_entropy(rows, 20), equal_nan=True)
