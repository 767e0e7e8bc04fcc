"""`sample` draws exactly the token of the textbook computation, for any row, temperature and draw.

The textbook draw below is the sampler as it was before the fast path (a
float64 softmax of logits / T over the whole vocabulary in id order, or the
top-k / top-p candidates, then the inverse CDF by a full running sum with
``u * probs.sum()``). `sample` must give the same token for the same row,
configuration and uniform number u; `Draws` feeds it chosen u's, including
ones placed on the steps of the CDF, where only the fall-back can decide.

Timing (not in the default suite): ``pytest -m slow -s -k timing
tests/test_sampling_exactness.py`` or ``python tests/test_sampling_exactness.py``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from eager.core.config import SamplingConfig
from eager.core.entropy import batch_entropy
from eager.core.sampling import _candidate_sets, _draw_by_cut, _draw_exactly, sample

VOCABS = [32, 1000, 49152, 151936]
TEMPERATURES = [0.2, 0.35, 0.6, 1.0, 1.5]


class Textbook:
    """The sampler before the fast path, for one row and configuration; ``token(u)`` draws."""

    def __init__(self, logits: np.ndarray, cfg: SamplingConfig) -> None:
        if cfg.top_k and cfg.top_k < logits.shape[-1]:
            wide = np.asarray(logits, dtype=np.float64)
            ids = np.argpartition(wide, -cfg.top_k)[-cfg.top_k :]
            probs = wide[ids] / cfg.temperature
        else:
            ids = None
            probs = np.divide(logits, cfg.temperature, dtype=np.float64)
        probs = np.exp(probs - probs.max())
        probs /= probs.sum()
        if cfg.top_p < 1.0:
            ids = np.arange(len(probs)) if ids is None else ids
            order = np.argsort(-probs, kind="stable")
            ids, probs = ids[order], probs[order]
            keep = int(np.searchsorted(np.cumsum(probs), cfg.top_p)) + 1
            ids, probs = ids[:keep], probs[:keep] / probs[:keep].sum()
        self.ids, self.running, self.total = ids, np.cumsum(probs), probs.sum()

    def token(self, u: float) -> int:
        index = min(int(np.searchsorted(self.running, u * self.total, side="right")), len(self.running) - 1)
        return index if self.ids is None else int(self.ids[index])

    def steps(self, indices) -> list[float]:
        """u's on and next to the CDF steps at these indices: the hardest draws to settle."""
        out = []
        for j in indices:
            edge = float(self.running[j] / self.total)
            out += [edge, np.nextafter(edge, 0.0), np.nextafter(edge, 1.0), edge * (1 - 1e-12), edge * (1 + 1e-12)]
        return [u for u in out if 0.0 <= u < 1.0]


class Draws:
    """A stand-in generator whose ``random()`` returns the given numbers in turn."""

    def __init__(self, *values: float) -> None:
        self.values, self.calls = list(values), 0

    def random(self) -> float:
        self.calls += 1
        return self.values.pop(0)


def hard_draws(book: Textbook, rng: np.random.Generator, n_random: int, n_steps: int = 6) -> list[float]:
    """Random u's, the ends of [0, 1), and u's on the steps of the likeliest and some random tokens."""
    probs = np.diff(book.running, prepend=0.0)
    likeliest = np.argsort(-probs, kind="stable")[:n_steps]
    anywhere = rng.integers(0, len(probs), n_steps)
    ends = [0.0, 5e-324, 1e-300, 1e-12, 1 - 1e-12, np.nextafter(1.0, 0.0)]
    return [*rng.random(n_random), *ends, *book.steps([*likeliest, *anywhere, 0, len(probs) - 1])]


def assert_textbook_tokens(row: np.ndarray, cfg: SamplingConfig, draws: list[float]) -> None:
    book = Textbook(row, cfg)
    for u in draws:
        assert sample(row, cfg, Draws(u)) == book.token(u), f"u={u!r}"


def typical_rows(vocab: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Flat rows (synthetic logits) and peaked ones shaped like a language model's."""
    peaked = rng.normal(0, 2.7, vocab)
    peaked[rng.integers(0, vocab, 5)] += rng.uniform(15, 30, 5)
    return {
        "narrow": rng.normal(0, 0.5, vocab).astype(np.float32),
        "flat": rng.normal(0, 3, vocab).astype(np.float32),
        "wide": rng.normal(0, 12, vocab).astype(np.float32),
        "peaked": peaked.astype(np.float32),
        "peaked_float64": peaked,
    }


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_sample_draws_the_textbook_token_for_random_rows(vocab, temperature):
    rng = np.random.default_rng([vocab, int(temperature * 100)])
    cfg = SamplingConfig(temperature=temperature)
    for row in typical_rows(vocab, rng).values():
        assert_textbook_tokens(row, cfg, hard_draws(Textbook(row, cfg), rng, 40))


def adversarial_rows(vocab: int, temperature: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Rows built to sit on the edges of the fast draw's cuts and bounds."""
    n = vocab
    rows = {
        "all_equal": np.zeros(n, dtype=np.float32),
        "many_ties": rng.integers(0, 3, n).astype(np.float32),
        "few_huge": np.where(rng.random(n) < 3 / n, 80.0, rng.normal(0, 3, n)).astype(np.float32),
        "one_enormous": np.r_[rng.normal(0, 3, n - 1), 1e4].astype(np.float32),
        "beyond_the_bounds": np.r_[rng.normal(0, 3, n - 1), 1e7].astype(np.float32),  # |max| / T past 10^6
        "half_minus_inf": np.where(rng.random(n) < 0.5, -np.inf, rng.normal(0, 3, n)).astype(np.float32),
        "all_but_two_minus_inf": np.r_[np.full(n - 2, -np.inf), 1.0, 1.5].astype(np.float32),
        "subnormal_weights": rng.uniform(-740 * temperature, 0, n).astype(np.float32),
        "float16": rng.normal(0, 3, n).astype(np.float16),
        "with_nan": np.r_[rng.normal(0, 3, n - 1), np.nan].astype(np.float32),
        "with_plus_inf": np.r_[rng.normal(0, 3, n - 1), np.inf].astype(np.float32),
    }
    # the likely token last (or first) and the rest between the two cuts, outside both, or on
    # the wide one: small u's (large ones) cross among them
    for name, nats in (("tail_between_cuts", 26.0), ("tail_beyond_cuts", 40.0), ("tail_at_wide_cut", 36.0)):
        rows[name] = np.r_[np.full(n - 1, -nats * temperature), 0.0].astype(np.float32)
        rows[name + "_first"] = np.r_[0.0, np.full(n - 1, -nats * temperature)].astype(np.float32)
    return rows


def tail_draws(book: Textbook) -> list[float]:
    """u's whose crossing falls among the tail tokens (the midpoints of their CDF steps)."""
    picks = np.unique(np.linspace(0, len(book.running) - 1, 9).astype(int))
    below = np.r_[0.0, book.running[:-1]]
    return [float((below[j] + book.running[j]) / 2 / book.total) for j in picks]


@pytest.mark.parametrize("vocab", VOCABS[:3])
@pytest.mark.parametrize("temperature", [0.2, 0.6, 1.5])
def test_sample_draws_the_textbook_token_for_adversarial_rows(vocab, temperature):
    rng = np.random.default_rng([vocab, int(temperature * 100), 1])
    cfg = SamplingConfig(temperature=temperature)
    with np.errstate(invalid="ignore", over="ignore"):
        for name, row in adversarial_rows(vocab, temperature, rng).items():
            book = Textbook(row, cfg)
            for u in [*hard_draws(book, rng, 10), *tail_draws(book)]:
                assert sample(row, cfg, Draws(u)) == book.token(u), f"{name}, u={u!r}"


def test_a_crossing_beyond_the_cuts_is_left_to_the_textbook_draw():
    temperature, n = 0.6, 49152
    row = np.r_[np.full(n - 1, -40 * temperature), 0.0].astype(np.float32)
    book = Textbook(row, SamplingConfig(temperature=temperature))
    for u in tail_draws(book)[:-1]:
        assert book.token(u) < n - 1  # the crossing is a tail token
        assert _draw_by_cut(row, temperature, u) is None
        assert sample(row, SamplingConfig(temperature=temperature), Draws(u)) == book.token(u)


def test_a_crossing_between_the_cuts_is_settled_by_the_wide_cut():
    temperature, n = 0.6, 1000  # a tail token's step (e^-26) is wide enough to settle
    row = np.r_[np.full(n - 1, -26 * temperature), 0.0].astype(np.float32)
    book = Textbook(row, SamplingConfig(temperature=temperature))
    u = tail_draws(book)[3]
    assert _draw_by_cut(row, temperature, u) == book.token(u) < n - 1


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize(
    "options",
    [
        *(dict(top_k=k) for k in (1, 5, 50, 10**6)),
        *(dict(top_p=p) for p in (0.5, 0.9, 0.999)),
        dict(top_k=40, top_p=0.9),
    ],
)
def test_sample_with_top_k_or_top_p_draws_the_textbook_token(vocab, options):
    rng = np.random.default_rng(vocab)
    for temperature in (0.2, 0.6, 1.5):
        cfg = SamplingConfig(temperature=temperature, **options)
        row = typical_rows(vocab, rng)["peaked"]
        assert_textbook_tokens(row, cfg, hard_draws(Textbook(row, cfg), rng, 5, n_steps=2))


def test_sample_takes_exactly_one_draw_and_greedy_takes_none():
    row = np.random.default_rng(0).normal(0, 3, 151936).astype(np.float32)
    for cfg in (SamplingConfig(temperature=0.6), SamplingConfig(temperature=0.6, top_p=0.9)):
        used, fresh = np.random.default_rng(5), np.random.default_rng(5)
        token = sample(row, cfg, used)
        assert token == Textbook(row, cfg).token(fresh.random())
        assert used.random() == fresh.random()
    draws = Draws()
    assert sample(row, SamplingConfig(temperature=0), draws) == int(np.argmax(row)) and draws.calls == 0


def test_the_fast_draw_settles_almost_every_draw_and_gathers_few_tokens_for_peaked_rows():
    rng = np.random.default_rng(11)
    rows = typical_rows(151936, rng)
    settled = sum(_draw_by_cut(row, 0.6, u) is not None for row in rows.values() for u in rng.random(300))
    assert settled >= 0.99 * 300 * len(rows)
    ids, _, _ = next(_candidate_sets(rows["peaked"], float(rows["peaked"].max()), 0.6))
    assert ids is not None and len(ids) < 0.01 * 151936
    ids, _, _ = next(_candidate_sets(rows["flat"], float(rows["flat"].max()), 0.6))
    assert ids is None  # most of a flat row is within the cut: weighed whole


# -- timing (slow) --------------------------------------------------------------------------------


def textbook_entropy(logits: np.ndarray, k: int) -> np.ndarray:
    """Top-k entropy as before: a partition of every whole row."""
    logits = np.asarray(logits, dtype=np.float32)
    top = np.partition(logits, logits.shape[-1] - k, axis=-1)[..., -k:].astype(np.float64)
    shifted = top - top.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    total = weights.sum(axis=-1)
    return np.log(total) - (weights * shifted).sum(axis=-1) / total


def fastest_ms(fn, repeats: int = 7) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def timing_table(batches=(1, 8, 16, 32), vocabs=(151936, 49152), temperature=0.6) -> list[dict]:
    """ms per step of the engine's maths (top-20 entropy of the batch, one draw per row), before and after.

    Before: a partition of every whole row, and the draw as it was, which is
    ``_draw_exactly`` (the textbook numbers, its running sum taken by blocks).
    "flat" rows are N(0, 3) logits (almost every token within 36 nats at
    T = 0.6, the worst case); "peaked" ones are shaped like a model's.
    """
    cfg, out = SamplingConfig(temperature=temperature), []
    for vocab in vocabs:
        for kind in ("flat", "peaked"):
            for rows in batches:
                rng = np.random.default_rng(rows)
                batch = np.stack([typical_rows(vocab, rng)[kind] for _ in range(rows)])
                us = rng.random(rows)
                out.append(dict(
                    vocab=vocab, kind=kind, rows=rows,
                    entropy=(fastest_ms(lambda: textbook_entropy(batch, 20)), fastest_ms(lambda: batch_entropy(batch, "topk", 20))),
                    sample=(
                        fastest_ms(lambda: [_draw_exactly(r, cfg, u) for r, u in zip(batch, us)]),
                        fastest_ms(lambda: [sample(r, cfg, Draws(u)) for r, u in zip(batch, us)]),
                    ),
                ))  # fmt: skip
    return out


@pytest.mark.slow
def test_timing_of_entropy_and_sampling_per_step():
    table = timing_table()
    for line in table:
        (e0, e1), (s0, s1) = line["entropy"], line["sample"]
        print(
            f"vocab {line['vocab']:6d} {line['kind']:6s} rows {line['rows']:2d}: entropy {e0:6.2f} -> {e1:5.2f} ms,"
            f" sampling {s0:6.2f} -> {s1:5.2f} ms, both {e0 + s0:6.2f} -> {e1 + s1:5.2f} ms"
        )
    for line in table:
        if line["rows"] == 16:
            (e0, e1), (s0, s1) = line["entropy"], line["sample"]
            assert e1 + s1 < e0 + s0


if __name__ == "__main__":
    test_timing_of_entropy_and_sampling_per_step()
