"""Metrics: pure functions from graded sequences to the numbers the paper reports.

Per prompt with n sequences of which c are correct:

- Pass@k (the paper's): 1 if ANY of the prompt's sequences is correct. k varies
  per prompt and method (EAGER produces a different number of sequences per prompt).
- unbiased pass@k (Chen et al. 2021): the probability that a random k-subset of the
  n sequences holds at least one correct one, 1 - C(n-c, k) / C(n, k), for fixed k.
- pass rate: c / n.
- Cons@k: majority vote over the extracted answers; 1 if the winner is correct.
  Answers that Math-Verify finds equal are one vote ("\\frac{1}{2}" and "0.5"):
  each answer joins the first earlier group whose representative (the group's
  first answer) it equals, else starts a group; the largest group wins, a tie goes
  to the group whose first answer comes first. Answers written the same way (after
  ``normalize_vote``) are grouped before any Math-Verify call, so a record of 32
  sequences costs at most (distinct answers x groups) comparisons.
- Cons@k exact: the same vote over the normalised strings only (the reference
  implementation's vote: lower-cased, spaces removed).

``summarize`` averages these over prompts and sums the cost counters. Each mean
comes with a 95% percentile-bootstrap interval over prompts (:func:`bootstrap_interval`),
and :func:`paired_differences` gives a method's difference from a baseline on the same
prompts, resampled in pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from eager.errors import EagerError

# equivalent(representative, answer) -> bool: are two extracted answers the same value?
Equivalence = Callable[[str, str], bool]


def pass_at_any(correct: Sequence[bool]) -> float:
    """1.0 if any sequence is correct, else 0.0 (also 0.0 for no sequences)."""
    return 1.0 if any(correct) else 0.0


def unbiased_pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k).

    C(n-c, k) / C(n, k) is the chance that k draws without replacement from n
    sequences all miss the c correct ones. Written as a product to avoid huge
    binomials:  C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i).
    If n - c < k every k-subset contains a correct sequence and the result is 1.
    """
    if n < 0 or not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    miss_all = 1.0
    for i in range(n - c + 1, n + 1):
        miss_all *= 1.0 - k / i
    return 1.0 - miss_all


def pass_rate(correct: Sequence[bool]) -> float:
    """Fraction of correct sequences; 0.0 for no sequences."""
    return sum(bool(x) for x in correct) / len(correct) if len(correct) else 0.0


def normalize_vote(answer: str | None) -> str | None:
    """The exact vote's key: strip, drop surrounding ``$``, drop all whitespace, lower-case
    (as the reference implementation; Math-Verify does not tell ``x`` from ``X`` either).
    ``" $\\frac{1}{2}$ "`` and ``"\\frac {1}{2}"`` vote together; "0.5" and
    "\\frac{1}{2}" do not. Returns None for None or an answer that is empty after
    normalisation."""
    if answer is None:
        return None
    key = "".join(answer.strip().strip("$").split()).lower()
    return key or None


def vote_groups(answers: Sequence[str | None], equivalent: Equivalence | None = None) -> list[list[int]]:
    """Answer positions grouped into votes (each group sorted), groups in order of their first answer.

    Answers with the same ``normalize_vote`` key are one group without any call of
    ``equivalent`` (without ``equivalent``, that is the whole exact vote). With it,
    each further distinct key is compared with the representatives (first answers)
    of the groups before it, in order, and joins the first one it equals, else
    starts a group. None answers vote for nothing.
    """
    by_key: dict[str, list[int]] = {}
    for index, answer in enumerate(answers):
        key = normalize_vote(answer)
        if key is not None:
            by_key.setdefault(key, []).append(index)
    groups: list[list[int]] = []
    for positions in by_key.values():  # dicts keep first-occurrence order
        home = _first_equal_group(groups, answers, answers[positions[0]], equivalent)
        if home is None:
            groups.append(list(positions))
        else:
            home.extend(positions)
    return [sorted(group) for group in groups]


def _first_equal_group(groups: list[list[int]], answers: Sequence[str | None], answer: str, equivalent: Equivalence | None) -> list[int] | None:
    if equivalent is None:
        return None
    for group in groups:
        if _safe_equal(equivalent, answers[group[0]], answer):
            return group
    return None


def _safe_equal(equivalent: Equivalence, first: str, second: str) -> bool:
    """A vote never crashes a report: an equivalence that raises means "different"."""
    try:
        return bool(equivalent(first, second))
    except Exception:
        return False


def _majority_index(answers: Sequence[str | None], equivalent: Equivalence | None = None) -> int | None:
    """First position of the largest vote group (ties: the group whose first answer comes first)."""
    groups = vote_groups(answers, equivalent)
    if not groups:
        return None
    return min(groups, key=lambda group: (-len(group), group[0]))[0]


def majority_vote(answers: Sequence[str | None], equivalent: Equivalence | None = None) -> str | None:
    """Most common answer, ignoring None: by ``normalize_vote`` key, and with ``equivalent``
    also merging answers it finds equal (see :func:`vote_groups`).

    Ties go to the group whose first answer comes first. Returns that first answer
    as written (not normalised), or None if there is no answer at all.
    """
    index = _majority_index(answers, equivalent)
    return None if index is None else answers[index]


def cons_at_k(answers: Sequence[str | None], correct: Sequence[bool], equivalent: Equivalence | None = None) -> float:
    """1.0 if the majority answer is correct (judged on its group's first answer), else 0.0.

    Without ``equivalent`` this is the exact-string vote (Cons@k exact)."""
    if len(answers) != len(correct):
        raise ValueError(f"answers and correct differ in length: {len(answers)} vs {len(correct)}")
    index = _majority_index(answers, equivalent)
    return 1.0 if index is not None and correct[index] else 0.0


def ks_up_to(n: int) -> list[int]:
    """Powers of two 1, 2, 4, ... not above n (empty for n < 1)."""
    ks = []
    k = 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks


@dataclass(frozen=True)
class PromptScore:
    """Metrics and costs of one prompt.

    Attributes:
        id: the problem id.
        n_sequences: number of finished sequences (#S).
        n_correct: how many of them were graded correct.
        pass_at_any: 1.0 if any sequence is correct.
        pass_rate: n_correct / n_sequences.
        cons: 1.0 if the majority-vote answer is correct (equal answers one vote).
        cons_exact: the same with the exact-string vote.
        generated_tokens: tokens the hardware generated (shared prefixes once, #T).
        sequence_tokens: sum of the sequences' own lengths (shared prefixes repeated).
        forks: number of fork events.
        preemptions: times the engine released the prompt's cache to make room
            (recomputed from its tokens; absent in older records: 0).
        wall_s: the prompt's share of the engine's time (prompts decode together:
            shares of one batch add up to its wall-clock).
    """

    id: str
    n_sequences: int
    n_correct: int
    pass_at_any: float
    pass_rate: float
    cons: float
    cons_exact: float
    generated_tokens: int
    sequence_tokens: int
    forks: int
    wall_s: float
    preemptions: int = 0
    n_length: int = 0  # sequences that ended at max tokens


def _required(record: dict[str, Any], key: str) -> Any:
    if key not in record:
        raise EagerError(f"eval record {record.get('id', '?')!r} has no {key!r} field")
    return record[key]


def score_prompt(record: dict[str, Any], equivalent: Equivalence | None = None) -> PromptScore:
    """Score one eval record; ``equivalent`` decides which answers are one vote in Cons@k
    (None: the exact-string vote, as Cons@k exact).

    The record holds "id", "generated_tokens", "wall_s", optionally "forks" (a list of
    fork events, or a count; absent means 0) and "sequences": a list of dicts with at
    least "n_tokens", "answer" and "correct".
    """
    sequences = _required(record, "sequences")
    answers = [sequence.get("answer") for sequence in sequences]
    correct = [bool(sequence.get("correct", False)) for sequence in sequences]
    forks = record.get("forks", 0)
    return PromptScore(
        id=str(_required(record, "id")),
        n_sequences=len(sequences),
        n_correct=sum(correct),
        pass_at_any=pass_at_any(correct),
        pass_rate=pass_rate(correct),
        cons=cons_at_k(answers, correct, equivalent),
        cons_exact=cons_at_k(answers, correct),
        generated_tokens=int(_required(record, "generated_tokens")),
        sequence_tokens=sum(int(sequence.get("n_tokens", 0)) for sequence in sequences),
        forks=forks if isinstance(forks, int) else len(forks),
        wall_s=float(_required(record, "wall_s")),
        preemptions=int(record.get("preemptions", 0)),
        n_length=sum(1 for sequence in sequences if sequence.get("finish_reason") == "length"),
    )


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def default_equivalence() -> Equivalence:
    """Math-Verify's equivalence with the default grading timeout."""
    from eager.eval.grading import AnswerEquivalence

    return AnswerEquivalence()


# -- intervals: the bootstrap over prompts ------------------------------------------------

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
# summary key -> the PromptScore field whose mean over prompts it is
PROMPT_MEANS = {"pass_at_k": "pass_at_any", "pass_rate": "pass_rate", "cons_at_k": "cons", "cons_at_k_exact": "cons_exact"}


def bootstrap_indices(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``resamples`` x ``n`` prompt positions drawn with replacement: each row is one
    data set of n prompts that could have been drawn instead of ours. Seeded, so the
    same prompts give the same intervals."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_interval(values: Sequence[float], indices: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-prompt ``values``.

    The mean is recomputed on every resample (a row of ``indices``); the interval
    runs from the (1 - level)/2 to the (1 + level)/2 quantile of those means. If
    every value is the same (all prompts solved), every resample's mean is that
    value and the interval is a point.
    """
    return _central(np.asarray(values, dtype=float)[indices].mean(axis=1), level)


def unpaired_difference_interval(
    values: Sequence[float], baseline: Sequence[float], level: float = LEVEL, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Interval of mean(values) - mean(baseline) resampling the two independently: what
    one would get ignoring that both were measured on the same prompts (for comparison)."""
    own = bootstrap_indices(len(values), seed=seed)
    other = bootstrap_indices(len(baseline), seed=seed + 1)
    diffs = np.asarray(values, dtype=float)[own].mean(axis=1) - np.asarray(baseline, dtype=float)[other].mean(axis=1)
    return _central(diffs, level)


def _central(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` range of ``samples``: their (1 - level)/2 and (1 + level)/2 quantiles."""
    tail = (1.0 - level) / 2
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def _by_id(scores: Sequence[PromptScore]) -> list[PromptScore]:
    """Scores in id order: records are appended as trees finish, so file order varies
    between runs; the resampled positions must mean the same prompts every time."""
    return sorted(scores, key=lambda score: score.id)


def prompt_intervals(scores: Sequence[PromptScore]) -> dict[str, list[float] | None]:
    """95% bootstrap interval over prompts of each mean in :data:`PROMPT_MEANS`."""
    ordered = _by_id(scores)
    indices = bootstrap_indices(len(ordered)) if ordered else None
    return {
        key: None if indices is None else list(bootstrap_interval([getattr(s, field) for s in ordered], indices))
        for key, field in PROMPT_MEANS.items()
    }


def paired_differences(scores: Sequence[PromptScore], baseline: Sequence[PromptScore]) -> dict[str, Any] | None:
    """Each mean's difference from ``baseline`` on the prompts both have, with a paired
    bootstrap interval: one resample of prompts serves both methods, so what makes a
    prompt easy or hard cancels out, and the interval is that of the per-prompt
    differences. None when they share no prompt."""
    theirs = {score.id: score for score in baseline}
    ours = [score for score in _by_id(scores) if score.id in theirs]
    if not ours:
        return None
    indices = bootstrap_indices(len(ours))
    result: dict[str, Any] = {"n_prompts": len(ours)}
    for key, field in PROMPT_MEANS.items():
        diffs = [getattr(s, field) - getattr(theirs[s.id], field) for s in ours]
        result[key] = {"difference": _mean(diffs), "ci95": list(bootstrap_interval(diffs, indices))}
    return result


# -- the summary --------------------------------------------------------------------------


def score_records(records: list[dict[str, Any]], equivalent: Equivalence | None = None) -> list[PromptScore]:
    """:func:`score_prompt` of each record (``equivalent`` default: Math-Verify)."""
    equivalent = equivalent or default_equivalence()
    return [score_prompt(record, equivalent) for record in records]


def sequences_per_prompt(scores: Sequence[PromptScore]) -> dict[str, float]:
    """The k of Pass@k and Cons@k, which is each prompt's number of sequences: min, max, mean."""
    counts = [score.n_sequences for score in scores]
    return {"min": min(counts, default=0), "max": max(counts, default=0), "mean": _mean(counts)}


def summarize(records: list[dict[str, Any]], equivalent: Equivalence | None = None) -> dict[str, Any]:
    """Aggregate eval records into one summary dict (:func:`summarize_scores` of their scores)."""
    return summarize_scores(score_records(records, equivalent))


def summarize_scores(scores: Sequence[PromptScore]) -> dict[str, Any]:
    """One summary dict from prompt scores.

    Means over prompts: "pass_at_k" (Pass@k, any sequence correct), "pass_rate",
    "cons_at_k" (answers the scoring equivalence finds equal are one vote),
    "cons_at_k_exact" (the exact-string vote), and "unbiased_pass_at_k" =
    {str(k): mean unbiased pass@k} for k in 1, 2, 4, ... up to the smallest number
    of sequences of any prompt. "intervals": each of the four means' 95% bootstrap
    interval over prompts, [low, high] (None without prompts). "k": min, max and
    mean sequences per prompt (the k of Pass@k and Cons@k).
    Sums: "generated_tokens", "sequence_tokens", "sequences", "forks", "preemptions",
    and "engine_time_share_s": the prompts' shares of the engine's time (not the
    run's elapsed time: methods share the engine, and eager-adapt and eager
    include their eager-init trees). "length_share": the fraction of sequences
    that ended at max tokens. "tokens_per_s" = generated_tokens / engine_time_share_s
    (0.0 when that is 0). An empty list gives zeros.
    """
    min_n = min((score.n_sequences for score in scores), default=0)
    unbiased = {
        str(k): _mean([unbiased_pass_at_k(s.n_sequences, s.n_correct, k) for s in scores])
        for k in ks_up_to(min_n)
    }
    generated = sum(score.generated_tokens for score in scores)
    engine_s = sum((score.wall_s for score in scores), 0.0)
    return {
        "n_prompts": len(scores),
        **{key: _mean([getattr(score, field) for score in scores]) for key, field in PROMPT_MEANS.items()},
        "intervals": prompt_intervals(scores),
        "k": sequences_per_prompt(scores),
        "unbiased_pass_at_k": unbiased,
        "generated_tokens": generated,
        "sequence_tokens": sum(score.sequence_tokens for score in scores),
        "sequences": sum(score.n_sequences for score in scores),
        "forks": sum(score.forks for score in scores),
        "preemptions": sum(score.preemptions for score in scores),
        "length_share": _ratio(sum(score.n_length for score in scores), sum(score.n_sequences for score in scores)),
        "engine_time_share_s": engine_s,
        "tokens_per_s": generated / engine_s if engine_s > 0 else 0.0,
    }
