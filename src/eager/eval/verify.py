"""Verifiers: what makes a sequence correct, and grading that never crashes a run."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from eager.eval.datasets import Problem
from eager.eval.grading import Grader, grade

log = logging.getLogger(__name__)

Verifier = Callable[[Problem, str], bool]


@dataclass(frozen=True)
class GoldAnswerVerifier:
    """The default verifier: the last \\boxed{} answer, graded against the gold by Math-Verify."""

    grader: Grader = field(default_factory=Grader)

    def __call__(self, problem: Problem, text: str) -> bool:
        return grade(text, problem.gold, self.grader)[1]


def verifier_name(verifier: Verifier | None) -> str:
    if verifier is None or isinstance(verifier, GoldAnswerVerifier):
        return "gold-answer (math-verify)"
    name = getattr(verifier, "__qualname__", None) or type(verifier).__qualname__
    return f"{getattr(verifier, '__module__', '?')}.{name}"


def safe(verifier: Verifier) -> Verifier:
    """Grading never crashes a run: a failing verifier counts the sequence as wrong."""

    def verify(problem: Problem, text: str) -> bool:
        try:
            return bool(verifier(problem, text))
        except Exception as error:  # a user's reward function may raise anything
            log.warning("verifier failed on %s (%s: %s); counted as wrong", problem.id, type(error).__name__, error)
            return False

    return verify
