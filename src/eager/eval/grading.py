"""Answers: pull the final answer out of a model's text and grade it against the gold.

Extraction is plain string work (``extract_answer``); equivalence is decided by
Math-Verify (``Grader``), which parses both sides to SymPy and compares them.
Grading never raises: a parse failure, a SymPy error or a timeout counts as wrong
and is logged, so one odd output cannot stop an evaluation run.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass

from eager.errors import EagerError

logger = logging.getLogger(__name__)

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_PHRASE = re.compile(r"answer\s+is|answer\s*:", re.IGNORECASE)
# A number: optional minus, digits with optional thousands commas, optional decimals,
# optionally a fraction a/b. The look-behind keeps "x2" or "3.14" from yielding "2" / "14".
_NUMBER = re.compile(
    r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)?"
)
_MATH_SPAN = re.compile(r"^\$+(.+?)\$+|^\\\((.+?)\\\)|^\\\[(.+?)\\\]", re.DOTALL)
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def _balanced_group(text: str, open_at: int) -> str | None:
    """Content of the ``{...}`` group opening at ``text[open_at]``, or None if unclosed."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return None


def _box_content(text: str, start: int) -> str | None:
    """Argument of a box command whose name ends just before ``text[start]``."""
    rest = text[start:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        return _balanced_group(text, start + len(rest) - len(stripped))
    if stripped is not rest and stripped:
        # "\boxed 5": TeX takes the next token; we take up to whitespace or a "$".
        token = re.match(r"[^\s$]+", stripped)
        return token.group(0) if token else None
    return None


def last_boxed(text: str) -> str | None:
    r"""Content of the last complete ``\boxed{...}`` / ``\fbox{...}`` in ``text``.

    Nested braces are balanced. ``\boxed 5`` (argument without braces) is read up to
    the next whitespace or ``$``. A box that is never closed (a truncated output) or
    is empty is skipped, so the previous complete box is used instead.
    """
    starts = sorted(
        m.end()
        for command in _BOX_COMMANDS
        for m in re.finditer(re.escape(command) + r"(?![A-Za-z])", text)
    )
    for start in reversed(starts):
        content = _box_content(text, start)
        if content is not None and content.strip():
            return content.strip()
    return None


def _after_answer_phrase(text: str) -> str | None:
    """What follows the last "answer is" / "Answer:" phrase, or None."""
    matches = list(_ANSWER_PHRASE.finditer(text))
    if not matches:
        return None
    tail = text[matches[-1].end() :].split("\n", 1)[0]
    tail = tail.strip().lstrip(":*").strip()
    span = _MATH_SPAN.match(tail)
    if span:
        return next(group for group in span.groups() if group is not None).strip()
    number = re.match(r"\\?\$?\s*(" + _NUMBER.pattern + r")", tail)
    if number:
        return number.group(1).replace(",", "")
    tail = tail.rstrip(".*").strip()
    return tail or None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def extract_answer(text: str) -> str | None:
    r"""The final answer written in ``text``, as a string, or None if there is none.

    In order of preference:

    1. the content of the LAST complete ``\boxed{...}`` or ``\fbox{...}`` (nested
       braces balanced; ``\boxed 5`` also accepted), stripped;
    2. otherwise the text after the last "answer is" / "Answer:" phrase (case
       insensitive), on the same line: the content of a leading ``$...$``, ``\(...\)``
       or ``\[...\]`` span if there is one, else a leading number (an optional ``$``
       currency sign is dropped, thousands commas removed), else the rest of the line
       without a trailing period;
    3. otherwise the last number in the text: integers, decimals, negatives and
       fractions such as ``3/4``, with thousands commas removed ("1,234" -> "1234").
    """
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    phrase = _after_answer_phrase(text)
    if phrase is not None:
        return phrase
    return _last_number(text)


def _normalise(answer: str) -> str:
    r"""Cheap canonical form for the exact-match quick path: no spaces, no outer
    ``$``, no ``\left``/``\right``, ``\dfrac``/``\tfrac`` as ``\frac``, no trailing period."""
    text = answer.strip().strip("$").strip().rstrip(".")
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return re.sub(r"\s+", "", text)


def _gold_latex(gold: str) -> str:
    """Gold answers are bare LaTeX ("\\frac{1}{2}"); math-verify needs math delimiters."""
    if "\\boxed" in gold or _UNESCAPED_DOLLAR.search(gold):
        return gold
    return f"${gold}$"


def _prediction_latex(answer: str) -> str:
    """Re-box the extracted answer: math-verify's boxed extraction also strips units
    and currency signs such as ``\\$18``."""
    return f"\\boxed{{{answer}}}"


@dataclass(frozen=True)
class Grader:
    """Mathematical-equivalence grading with Math-Verify.

    Attributes:
        timeout_s: limit for each Math-Verify parse and comparison, in seconds
            (rounded up to whole seconds, which is what its ``signal.alarm`` takes).
            Math-Verify can only time out in the main thread; in any other thread
            the grader runs it without a timeout.
    """

    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise EagerError(f"Grader timeout_s must be > 0, got {self.timeout_s}")

    def _mv_timeout(self) -> int | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        return max(1, math.ceil(self.timeout_s))

    def is_correct(self, answer: str | None, gold: str) -> bool:
        """True if ``answer`` is mathematically equivalent to ``gold``; never raises."""
        if answer is None:
            return False
        if _normalise(answer) == _normalise(gold) and _normalise(gold):
            return True
        try:
            return self._verify(answer, gold)
        except BaseException as error:  # math-verify's TimeoutException is a BaseException
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            logger.warning(
                "grading failed (%s: %s); counted as wrong: answer=%.200r gold=%.200r",
                type(error).__name__, error, answer, gold,
            )
            return False

    def _verify(self, answer: str, gold: str) -> bool:
        from math_verify import parse, verify

        timeout = self._mv_timeout()
        gold_parsed = parse(_gold_latex(gold), parsing_timeout=timeout, raise_on_error=True)
        pred_parsed = parse(_prediction_latex(answer), parsing_timeout=timeout, raise_on_error=True)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout, raise_on_error=True))


def grade(text: str, gold: str, grader: Grader = Grader()) -> tuple[str | None, bool]:
    """Extract the answer from a model output and grade it: ``(answer, correct)``."""
    answer = extract_answer(text)
    return answer, grader.is_correct(answer, gold)
