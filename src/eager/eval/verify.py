"""Verifiers: what makes a sequence correct, and grading that never crashes a run."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from eager.eval.datasets import Problem
from eager.eval.grading import DEFAULT_EXTRACT, Extracted, Grader, SOURCE_NONE, check_extract_mode, extract, grade

log = logging.getLogger(__name__)

Verifier = Callable[[Problem, str], bool]


@dataclass(frozen=True)
class GoldAnswerVerifier:
    """The default verifier: the answer extracted under ``extract`` ("boxed": the last
    \\boxed{} only; "lenient": with fallbacks), graded against the gold by Math-Verify."""

    grader: Grader = field(default_factory=Grader)
    extract: str = DEFAULT_EXTRACT

    def __post_init__(self) -> None:
        check_extract_mode(self.extract)

    def __call__(self, problem: Problem, text: str) -> bool:
        return grade(text, problem.gold, self.grader, self.extract).correct


def verifier_name(verifier: Verifier | None) -> str:
    if verifier is None or isinstance(verifier, GoldAnswerVerifier):
        return "gold-answer (math-verify)"
    if isinstance(getattr(verifier, "label", None), str):
        return verifier.label
    name = getattr(verifier, "__qualname__", None) or type(verifier).__qualname__
    return f"{getattr(verifier, '__module__', '?')}.{name}"


@dataclass(frozen=True)
class SafeVerifier:
    """A verifier that never raises, and the extraction mode of the answers recorded beside
    its verdicts (records and Cons@k use :meth:`answer`, whatever decides correctness)."""

    verifier: Verifier
    extract: str = DEFAULT_EXTRACT

    def __call__(self, problem: Problem, text: str) -> bool:
        try:
            return bool(self.verifier(problem, text))
        except Exception as error:  # a user's reward function may raise anything
            log.warning("verifier failed on %s (%s: %s); counted as wrong", problem.id, type(error).__name__, error)
            return False

    def answer(self, text: str) -> Extracted:
        """The answer of ``text`` and its source (the verifier's own ``answer`` if it has
        one, as the code verifier); never raises."""
        own = getattr(self.verifier, "answer", None)
        try:
            return own(text) if callable(own) else extract(text, self.extract)
        except Exception as error:
            log.warning("answer extraction failed (%s: %s)", type(error).__name__, error)
            return Extracted(None, SOURCE_NONE)

    def details(self, problem: Problem, text: str) -> dict[str, Any]:
        """What the verifier says beside its verdict, for the record (the code verifier:
        "passed", "reason", "stderr"); {} for others or when it raises."""
        own = getattr(self.verifier, "details", None)
        try:
            return dict(own(problem, text)) if callable(own) else {}
        except Exception as error:
            log.warning("verifier details failed on %s (%s: %s)", problem.id, type(error).__name__, error)
            return {}

    def prefetch(self, problem: Problem, texts: Sequence[str]) -> None:
        """Start grading ``texts`` in the background, if the verifier can (the code verifier)."""
        own = getattr(self.verifier, "prefetch", None)
        if callable(own):
            try:
                own(problem, texts)
            except Exception as error:  # grading proper reports it
                log.debug("prefetch failed on %s: %s", problem.id, error)

    def ready(self, problem: Problem, texts: Sequence[str]) -> bool:
        """Whether grading ``texts`` would not wait (always, for a verifier that cannot prefetch)."""
        own = getattr(self.verifier, "ready", None)
        try:
            return bool(own(problem, texts)) if callable(own) else True
        except Exception:
            return True


def safe(verifier: Verifier, extract: str | None = None) -> SafeVerifier:
    """Grading never crashes a run: a failing verifier counts the sequence as wrong.

    ``extract`` is the run's extraction mode (default: the verifier's own, else
    "boxed"); a :class:`GoldAnswerVerifier` grades under it too, so the answers
    recorded and the verdicts agree.
    """
    own = verifier.extract if isinstance(verifier, (GoldAnswerVerifier, SafeVerifier)) else DEFAULT_EXTRACT
    mode = check_extract_mode(extract or own)
    if isinstance(verifier, GoldAnswerVerifier) and verifier.extract != mode:
        verifier = replace(verifier, extract=mode)
    return SafeVerifier(verifier, mode)


def details_of(verify: Verifier, problem: Problem, text: str) -> dict[str, Any]:
    """The verifier's details of ``text`` (:meth:`SafeVerifier.details`); never raises."""
    return (verify if isinstance(verify, SafeVerifier) else SafeVerifier(verify)).details(problem, text)


def answer_of(verify: Verifier, text: str) -> Extracted:
    """The answer recorded for ``text``: under ``verify``'s extraction mode if it has one (a
    :class:`SafeVerifier`), else the default mode; never raises."""
    return verify.answer(text) if isinstance(verify, SafeVerifier) else SafeVerifier(verify).answer(text)
