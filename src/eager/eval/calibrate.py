"""Calibration: the theta at which EAGER-init grows trees of a chosen size on one model.

Data flow: warm-up problems -> one tree per prompt at a theta nothing exceeds (the
no-fork chain: its entropies and length; parallel sampling's tokens are estimated as
M such chains) -> a first guess from those entropies -> trees at each theta the
search picks -> points (theta, mean sequences, generated tokens, Pass@k) -> the choice.

A search, not a grid: tree size falls as theta rises (in expectation: a higher
threshold only removes forks). The search keeps a bracket [lo, hi], the curve above
the target at lo and below it at hi, and tries where the line between the ends
crosses the target (regula falsi with the Illinois rule: an end that stays put twice
has its distance to the target halved), at least a tenth of the bracket from either
end. At theta 0 the curve is taken at its ceiling (M sequences; all of parallel's
tokens) until measured; at the warm-up's largest entropy it is one chain exactly.
A prompt's trees have the same sampling key at every theta (common random numbers):
they agree until their first different fork, so the measured curve is smooth.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from eager.core.config import BranchingConfig, SamplingConfig, option
from eager.core.quantile import RunningPercentile
from eager.core.results import GenerationResult, StepStats
from eager.core.tree import TreeRequest
from eager.errors import EagerError
from eager.eval.datasets import DEFAULT_TEMPLATE, Problem, format_prompt
from eager.eval.executors import Executor
from eager.eval.metrics import pass_at_any
from eager.eval.verify import Verifier

log = logging.getLogger(__name__)

# A theta above any entropy (in nats; ln of a vocabulary of 10^43 tokens): the warm-up never forks.
NO_FORK_THETA = 100.0
# The search stops when its bracket is narrower than this (nats): finer differences drown in sampling noise.
RESOLUTION = 0.01
# Regula falsi's next try stays at least this share of the bracket away from either end.
SAFEGUARD = 0.1
ENTROPY_BIN = 0.05  # nats: the histogram of warm-up entropies in calib.json


@dataclass(frozen=True)
class CalibrationConfig:
    """What ``eager calibrate`` aims at and how long it searches.

    Attributes:
        target_sequences: the mean sequences per prompt to aim at (None: M/2, a tree
            that spends half of parallel sampling's sequences).
        target_token_ratio: aim instead at generated tokens / parallel sampling's
            generated tokens (0 < R <= 1); parallel's are M times the warm-up chains'.
        labels: choose, among the thetas tried, the one with the best Pass@k per
            generated token (needs gold answers); the search still aims at the target.
        max_points: thetas tried at most after the warm-up.
        tolerance: the search stops at a point within this fraction of the target.
    """

    target_sequences: float | None = option(None, "aim at this mean number of sequences per prompt (default: M/2)")
    target_token_ratio: float | None = option(None, "aim instead at generated tokens / parallel sampling's, 0 < R <= 1")
    labels: bool = option(False, "choose the tried theta with the best Pass@k per generated token (needs gold answers)")
    max_points: int = option(6, "thetas tried at most after the warm-up (default: {default})")
    tolerance: float = option(0.1, "stop at a point within this fraction of the target (default: {default})")

    def __post_init__(self) -> None:
        if self.target_sequences is not None and self.target_token_ratio is not None:
            raise EagerError("give target_sequences or target_token_ratio, not both")
        if self.target_sequences is not None and not self.target_sequences > 1:
            raise EagerError(f"target_sequences must be > 1 (one sequence is a tree that never forks), got {self.target_sequences}")
        if self.target_token_ratio is not None and not 0 < self.target_token_ratio <= 1:
            raise EagerError(f"target_token_ratio must be in (0, 1], got {self.target_token_ratio}")
        if self.max_points < 1:
            raise EagerError(f"max_points must be >= 1, got {self.max_points}")
        if not 0 < self.tolerance < 1:
            raise EagerError(f"tolerance must be in (0, 1), got {self.tolerance}")


# -- the target: which number of a point, and the value aimed at ---------------------------


@dataclass(frozen=True)
class Target:
    """The number of a :class:`Point` aimed at, and its bounds.

    Attributes:
        measure: "mean_sequences" or "token_ratio".
        value: the value aimed at.
        ceiling: the most the curve can reach (at theta 0): M sequences, or 1.
        floor: the curve where nothing forks: one sequence, or 1/M.
    """

    measure: str
    value: float
    ceiling: float
    floor: float

    def of(self, point: "Point") -> float:
        return getattr(point, self.measure)

    def describe(self) -> str:
        what = "mean sequences per prompt" if self.measure == "mean_sequences" else "generated tokens / parallel sampling's"
        return f"{what} = {self.value:g}"


def target_of(config: CalibrationConfig, M: int) -> Target:
    if M < 2:
        raise EagerError(f"calibration needs M >= 2 (a tree of one sequence never forks), got {M}")
    if config.target_token_ratio is not None:
        return Target("token_ratio", config.target_token_ratio, ceiling=1.0, floor=1.0 / M)
    value = M / 2 if config.target_sequences is None else config.target_sequences
    if value > M:
        raise EagerError(f"target_sequences {value:g} is above M = {M}: a tree has at most M sequences")
    return Target("mean_sequences", value, ceiling=float(M), floor=1.0)


# -- measurements ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """EAGER-init trees of every warm-up prompt at one theta.

    Attributes:
        theta: the threshold (nats).
        mean_sequences: sequences per prompt, averaged.
        token_ratio: generated tokens / parallel sampling's (M x the warm-up chains' tokens).
        generated_tokens: over all prompts, a shared prefix counted once.
        pass_at_k: share of prompts with a correct sequence (None without labels).
        wall_s: seconds to grow (and grade) the trees.
        sequences: sequences of each prompt's tree.
    """

    theta: float
    mean_sequences: float
    token_ratio: float
    generated_tokens: int
    pass_at_k: float | None
    wall_s: float
    sequences: tuple[int, ...]

    @property
    def pass_per_kilotoken(self) -> float | None:
        """Pass@k per 1000 generated tokens per prompt: what ``labels`` maximises."""
        if self.pass_at_k is None or not self.generated_tokens:
            return None
        return self.pass_at_k / (self.generated_tokens / len(self.sequences) / 1000)

    def to_dict(self) -> dict[str, Any]:
        return {
            "theta": round(self.theta, 4),
            "mean_sequences": round(self.mean_sequences, 4),
            "token_ratio": round(self.token_ratio, 4),
            "generated_tokens": self.generated_tokens,
            "pass_at_k": self.pass_at_k,
            "pass_per_kilotoken": None if self.pass_per_kilotoken is None else round(self.pass_per_kilotoken, 4),
            "wall_s": round(self.wall_s, 2),
            "sequences": list(self.sequences),
        }


@dataclass(frozen=True)
class Warmup:
    """The no-fork chain of every warm-up prompt: one parallel sample each.

    Attributes:
        entropies: per prompt, the entropy at each of its chain's tokens.
        generated_tokens: tokens of all chains.
        pass_at_1: share of prompts whose chain is correct (None without labels).
        wall_s: seconds it took.
    """

    entropies: tuple[tuple[float, ...], ...]
    generated_tokens: int
    pass_at_1: float | None
    wall_s: float

    @property
    def highest(self) -> float:
        """No tree of these prompts forks at this theta or above: it is the warm-up chain itself."""
        return max((max(h) for h in self.entropies if h), default=0.0)

    def all_entropies(self) -> np.ndarray:
        return np.fromiter((x for h in self.entropies for x in h), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        values = self.all_entropies()
        bins = max(1, math.ceil(self.highest / ENTROPY_BIN))
        counts, _ = np.histogram(values, bins=bins, range=(0.0, bins * ENTROPY_BIN))
        quantiles = {f"p{q}": round(float(np.percentile(values, q)), 4) for q in (50, 90, 99)} if values.size else {}
        return {
            "chains": len(self.entropies),
            "generated_tokens": self.generated_tokens,
            "pass_at_1": self.pass_at_1,
            "wall_s": round(self.wall_s, 2),
            "entropy": {**quantiles, "max": round(self.highest, 4), "bin_width": ENTROPY_BIN, "counts": counts.tolist()},
        }


# -- the first guess: the warm-up chains replayed at a theta, offline --------------------------


def running_p99(entropies: Sequence[float]) -> np.ndarray:
    """P99 of each token's earlier entropies in one chain (the dynamic threshold; 0 before any)."""
    history = RunningPercentile(99.0)
    out = np.zeros(len(entropies))
    for step, h in enumerate(entropies):
        out[step] = history.value() if history.n else 0.0
        history.add(h)
    return out


def replayed_forks(entropies: np.ndarray, p99: np.ndarray, theta: float, branching: BranchingConfig) -> np.ndarray:
    """Steps where a tree of this one chain would fork at ``theta``: children and their
    entropies ignored, the chain's own running P99 (``p99``) standing in for the tree's."""
    threshold = np.maximum(theta, p99) if branching.dynamic_theta else np.full(len(entropies), theta)
    return np.flatnonzero(entropies > threshold)[: branching.max_sequences - 1]


def first_guess(warmup: Warmup, branching: BranchingConfig, target: Target) -> float:
    """The theta at which the warm-up chains, replayed with forks, come closest to the target.

    Children fork too in a real tree, so this guess is low; the search corrects it.
    """
    chains = [np.asarray(h, dtype=np.float64) for h in warmup.entropies if h]
    if not chains:
        return 0.0
    p99s = [running_p99(h) for h in chains]
    candidates = np.unique(np.concatenate(chains))
    if candidates.size > 400:
        candidates = np.unique(np.quantile(candidates, np.linspace(0.0, 1.0, 400)))
    gaps = [abs(_replayed(chains, p99s, float(theta), branching, target, warmup.generated_tokens) - target.value) for theta in candidates]
    return float(candidates[int(np.argmin(gaps))])


def _replayed(chains, p99s, theta: float, branching: BranchingConfig, target: Target, chain_tokens: int) -> float:
    sequences, tokens = [], 0
    for h, p99 in zip(chains, p99s):
        forks = replayed_forks(h, p99, theta, branching)
        sequences.append(1 + len(forks))
        tokens += len(h) + int(np.sum(len(h) - forks))  # each child runs to the chain's length
    if target.measure == "mean_sequences":
        return float(np.mean(sequences))
    return tokens / (branching.max_sequences * max(1, chain_tokens))


# -- the search ---------------------------------------------------------------------------------


def search(measure: Callable[[float], Point], target: Target, *, first: float, highest: float, max_points: int, tolerance: float) -> list[Point]:
    """Points at the thetas a safeguarded regula falsi picks on the non-increasing curve.

    ``highest``: the curve there is ``target.floor`` (nothing forks); at 0 it is
    assumed at ``target.ceiling`` until measured. Stops at a point within
    ``tolerance`` x the target, after ``max_points``, or when the bracket is
    narrower than :data:`RESOLUTION`.
    """
    goal = target.value
    lo, lo_value = 0.0, target.ceiling
    hi, hi_value = max(highest, RESOLUTION), target.floor
    theta = _inside(first, lo, hi)
    points: list[Point] = []
    moved = None  # the end the last point replaced
    for _ in range(max_points):
        point = measure(theta)
        points.append(point)
        value = target.of(point)
        if abs(value - goal) <= tolerance * goal:
            break
        # Illinois: when one end moves twice in a row, the other end's distance to the goal
        # is halved, so a curved stretch cannot pin the next try to the moving end
        if value > goal:
            lo, lo_value = theta, value
            hi_value = goal + (hi_value - goal) / 2 if moved == "lo" else hi_value
            moved = "lo"
        else:
            hi, hi_value = theta, value
            lo_value = goal + (lo_value - goal) / 2 if moved == "hi" else lo_value
            moved = "hi"
        if hi - lo < RESOLUTION:
            break
        theta = _regula_falsi(lo, lo_value, hi, hi_value, goal)
    return points


def _regula_falsi(lo: float, lo_value: float, hi: float, hi_value: float, goal: float) -> float:
    """Where the line from (lo, lo_value) to (hi, hi_value) crosses ``goal``, kept off the ends."""
    if lo_value == hi_value:
        return (lo + hi) / 2
    guess = lo + (lo_value - goal) / (lo_value - hi_value) * (hi - lo)
    return _inside(guess, lo, hi)


def _inside(theta: float, lo: float, hi: float) -> float:
    margin = SAFEGUARD * (hi - lo)
    return float(min(max(theta, lo + margin), hi - margin))


def choose(points: Sequence[Point], target: Target, labels: bool) -> tuple[Point, str]:
    """The point to keep, and why: closest to the target, or the best Pass@k per token with labels."""
    closest = min(points, key=lambda p: (abs(target.of(p) - target.value), p.theta))
    if not labels:
        return closest, f"closest to {target.describe()}"
    solved = [p for p in points if p.pass_at_k]
    if not solved:
        return closest, f"closest to {target.describe()} (no theta tried solved a prompt, so labels could not choose)"
    best = max(solved, key=lambda p: (p.pass_per_kilotoken, -p.theta))
    return best, "the best Pass@k per generated token among the thetas tried"


# -- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationProgress:
    """Sent after every engine step: which point (0 is the warm-up) and how far its trees are."""

    point: int
    theta: float
    trees_done: int
    trees_total: int
    tokens_per_s: float


@dataclass(frozen=True)
class Calibration:
    """The outcome: the theta chosen, why, and every measurement behind it."""

    theta: float
    reason: str
    reached: bool  # a point lies within tolerance of the target
    target: Target
    points: tuple[Point, ...]
    warmup: Warmup
    branching: BranchingConfig
    sampling: SamplingConfig
    config: CalibrationConfig
    problem_ids: tuple[str, ...]
    wall_s: float

    @property
    def chosen(self) -> Point:
        return next(p for p in self.points if p.theta == self.theta)

    def to_dict(self) -> dict[str, Any]:
        return {
            "theta": round(self.theta, 4),
            "reason": self.reason,
            "reached": self.reached,
            "target": {"measure": self.target.measure, "value": self.target.value},
            "M": self.branching.max_sequences,
            "points": [p.to_dict() for p in sorted(self.points, key=lambda p: p.theta)],
            "warmup": self.warmup.to_dict(),
            "branching": {k: v for k, v in asdict(self.branching).items() if k != "theta"},
            "sampling": asdict(self.sampling),
            "search": {"max_points": self.config.max_points, "tolerance": self.config.tolerance, "labels": self.config.labels},
            "prompts": list(self.problem_ids),
            "wall_s": round(self.wall_s, 2),
        }


@dataclass
class _Trees:
    """Grows one EAGER-init tree per problem at a theta, with the same keys at every theta."""

    executor: Executor
    problems: Sequence[Problem]
    branching: BranchingConfig
    sampling: SamplingConfig
    template: str
    chat: bool
    verify: Verifier | None
    on_progress: Callable[[CalibrationProgress], None] | None
    points_done: int = 0
    parallel_tokens: int = 0

    def grow(self, theta: float) -> tuple[list[GenerationResult], list[list[bool]] | None, float]:
        started = time.perf_counter()
        branching = replace(self.branching, theta=theta)
        requests = [
            TreeRequest(format_prompt(p, self.template), "eager-init", branching, self.sampling, key=(zlib.crc32(p.id.encode("utf-8")),), chat=self.chat)
            for p in self.problems
        ]
        results: list[GenerationResult | None] = [None] * len(requests)
        for position, result in self.executor.run(requests, self._on_step(theta)):
            results[position] = result
        graded = None
        if self.verify is not None:
            graded = [[self.verify(p, s.text) for s in r.sequences] for p, r in zip(self.problems, results)]
        self.points_done += 1
        return results, graded, time.perf_counter() - started  # type: ignore[return-value]

    def _on_step(self, theta: float) -> Callable[[StepStats], None]:
        def on_step(stats: StepStats) -> None:
            if self.on_progress is not None:
                rate = stats.generated_tokens / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
                self.on_progress(CalibrationProgress(self.points_done, theta, stats.prompts_done, len(self.problems), rate))

        return on_step

    def warmup(self) -> Warmup:
        results, graded, wall = self.grow(NO_FORK_THETA)
        entropies = tuple(tuple(float(x) for x in r.sequences[0].entropies) for r in results)
        self.parallel_tokens = self.branching.max_sequences * sum(r.generated_tokens for r in results)
        pass_at_1 = None if graded is None else float(np.mean([pass_at_any(g) for g in graded]))
        log.info("warm-up: %d chains, %d tokens, %.1f s", len(results), sum(r.generated_tokens for r in results), wall)
        return Warmup(entropies, sum(r.generated_tokens for r in results), pass_at_1, wall)

    def point(self, theta: float) -> Point:
        results, graded, wall = self.grow(theta)
        sequences = tuple(len(r.sequences) for r in results)
        generated = sum(r.generated_tokens for r in results)
        pass_at_k = None if graded is None else float(np.mean([pass_at_any(g) for g in graded]))
        point = Point(theta, float(np.mean(sequences)), generated / max(1, self.parallel_tokens), generated, pass_at_k, wall, sequences)
        log.info("theta %.4f: %.2f sequences per prompt, %d tokens (%.3f of parallel), %.1f s", theta, point.mean_sequences, generated, point.token_ratio, wall)
        return point


def calibrate(
    executor: Executor,
    problems: Sequence[Problem],
    *,
    branching: BranchingConfig | None = None,
    sampling: SamplingConfig | None = None,
    config: CalibrationConfig | None = None,
    template: str = DEFAULT_TEMPLATE,
    chat: bool = True,
    verify: Verifier | None = None,
    on_progress: Callable[[CalibrationProgress], None] | None = None,
) -> Calibration:
    """Search the theta at which EAGER-init trees of ``problems`` meet the target.

    ``branching.max_sequences`` is M; its other rules (dynamic theta, window, entropy
    measure) are those the chosen theta holds for. ``verify`` (a never-raising
    verifier, ``eager.eval.verify.safe``) grades every sequence; ``config.labels``
    needs it.
    """
    branching = branching or BranchingConfig()
    sampling = sampling or SamplingConfig()
    config = config or CalibrationConfig()
    if not problems:
        raise EagerError("no warm-up prompts to calibrate on")
    if config.labels and verify is None:
        raise EagerError("labels needs a verifier (gold answers)")
    target = target_of(config, branching.max_sequences)
    started = time.perf_counter()
    trees = _Trees(executor, problems, branching, sampling, template, chat, verify, on_progress)
    warmup = trees.warmup()
    first = first_guess(warmup, branching, target)
    points = search(trees.point, target, first=first, highest=warmup.highest, max_points=config.max_points, tolerance=config.tolerance)
    chosen, reason = choose(points, target, config.labels)
    reached = any(abs(target.of(p) - target.value) <= config.tolerance * target.value for p in points)
    return Calibration(
        theta=chosen.theta, reason=reason, reached=reached, target=target, points=tuple(points), warmup=warmup,
        branching=branching, sampling=sampling, config=config, problem_ids=tuple(p.id for p in problems),
        wall_s=time.perf_counter() - started,
    )


# -- the picture ----------------------------------------------------------------------------


def plot_calibration(calibration: Calibration, path: str) -> None:
    """Left: the warm-up entropies with the chosen theta. Right: tree size (and the target) against theta."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    values = calibration.warmup.all_entropies()
    left.hist(values, bins=max(1, math.ceil(calibration.warmup.highest / ENTROPY_BIN)), color="#8aa", edgecolor="none")
    left.axvline(calibration.theta, color="#c33", label=f"theta = {calibration.theta:.3g}")
    left.set(xlabel="entropy of a warm-up token (nats)", ylabel="tokens", yscale="log", title="warm-up entropies")
    left.legend()
    points = sorted(calibration.points, key=lambda p: p.theta)
    right.plot([p.theta for p in points], [p.mean_sequences for p in points], "o-", color="#36a", label="mean sequences")
    right.plot([calibration.warmup.highest], [1.0], "o", mfc="none", color="#36a", label="no fork from here (warm-up)")
    if calibration.target.measure == "mean_sequences":
        right.axhline(calibration.target.value, color="#999", linestyle="--", label="target")
    else:
        twin = right.twinx()
        twin.plot([p.theta for p in points], [p.token_ratio for p in points], "s:", color="#a63", label="token ratio")
        twin.axhline(calibration.target.value, color="#a63", linestyle="--", alpha=0.5)
        twin.set_ylabel("generated tokens / parallel")
    right.axvline(calibration.theta, color="#c33")
    right.set(xlabel="theta (nats)", ylabel="sequences per prompt", title=f"tree size (M = {calibration.branching.max_sequences})")
    right.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
