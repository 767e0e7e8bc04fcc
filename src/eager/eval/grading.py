"""Answers: pull the final answer out of a model's text and grade it against the gold.

Extraction is plain string work, one function per mode (``EXTRACTORS``):

* ``boxed`` (the default, as the paper): the last ``\\boxed{...}`` only. A chain
  with no box, or whose last box is never closed (a truncated output), has no
  answer and is wrong.
* ``lenient``: the last complete box, else the text after "answer is", else the
  last number in the text (what eager did before the paper's rule was adopted).

:func:`extract` returns the answer and where it came from (``"boxed"``,
``"fallback"`` or ``"none"``). Equivalence is decided by Math-Verify
(:class:`Grader`, :class:`AnswerEquivalence`), which parses both sides to SymPy
and compares them. Grading never raises: a parse failure, a SymPy error or a
timeout counts as wrong (or "not equal") and is logged, so one odd output cannot
stop an evaluation run.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from eager.errors import EagerError

logger = logging.getLogger(__name__)

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BOX_START = re.compile("|".join(re.escape(command) for command in _BOX_COMMANDS) + r"(?![A-Za-z])")
_SPACES = re.compile(r"\s*")
_BARE_ARGUMENT = re.compile(r"[^\s$]+")
_ANSWER_PHRASE = re.compile(r"answer\s+is|answer\s*:", re.IGNORECASE)
# A number: optional minus, digits with optional thousands commas, optional decimals,
# optionally a fraction a/b. The look-behind keeps "x2" or "3.14" from yielding "2" / "14".
_NUMBER = re.compile(
    r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)?"
)
_MATH_SPAN = re.compile(r"^\$+(.+?)\$+|^\\\((.+?)\\\)|^\\\[(.+?)\\\]", re.DOTALL)
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")

# Where an extracted answer came from.
SOURCE_BOXED = "boxed"
SOURCE_FALLBACK = "fallback"
SOURCE_NONE = "none"


class Extracted(NamedTuple):
    """An extracted answer (None if the text has none) and its source: "boxed", "fallback" or "none"."""

    answer: str | None
    source: str


class Graded(NamedTuple):
    """An extracted answer, its source, and whether it equals the gold."""

    answer: str | None
    source: str
    correct: bool


# -- boxes ------------------------------------------------------------------------------


def _matching_braces(text: str) -> dict[int, int]:
    """Position of each ``{`` -> position of the ``}`` that closes it (unclosed ones absent); one pass."""
    closes: dict[int, int] = {}
    opened: list[int] = []
    for i, char in enumerate(text):
        if char == "{":
            opened.append(i)
        elif char == "}" and opened:
            closes[opened.pop()] = i
    return closes


def _box_content(text: str, start: int, closes: dict[int, int]) -> str | None:
    """Argument of a box command whose name ends just before ``text[start]``; None if unclosed or absent."""
    at = _SPACES.match(text, start).end()
    if text.startswith("{", at):
        close_at = closes.get(at)
        return None if close_at is None else text[at + 1 : close_at]
    if at > start:
        # "\boxed 5": TeX takes the next token; we take up to whitespace or a "$".
        token = _BARE_ARGUMENT.match(text, at)
        return token.group(0) if token else None
    return None


def _box_starts(text: str) -> list[int]:
    """Where the argument of each ``\\boxed`` / ``\\fbox`` command begins, in text order."""
    return [m.end() for m in _BOX_START.finditer(text)]


def _stripped(content: str | None) -> str | None:
    return content.strip() if content is not None and content.strip() else None


def final_box(text: str) -> str | None:
    r"""Content of the LAST ``\boxed`` / ``\fbox`` command in ``text``, stripped, or None.

    None when there is no box, or when the last box is empty or never closed (an
    output cut off inside its answer): an earlier box is not used, as in the paper.
    """
    starts = _box_starts(text)
    if not starts:
        return None
    return _stripped(_box_content(text, starts[-1], _matching_braces(text)))


def last_boxed(text: str) -> str | None:
    r"""Content of the last complete ``\boxed{...}`` / ``\fbox{...}`` in ``text``.

    Nested braces are balanced. ``\boxed 5`` (argument without braces) is read up to
    the next whitespace or ``$``. A box that is never closed (a truncated output) or
    is empty is skipped, so the previous complete box is used instead.
    """
    starts = _box_starts(text)
    closes = _matching_braces(text) if starts else {}
    for start in reversed(starts):
        content = _stripped(_box_content(text, start, closes))
        if content is not None:
            return content
    return None


# -- fallbacks --------------------------------------------------------------------------


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


# -- the extraction modes ---------------------------------------------------------------


def boxed_only(text: str) -> Extracted:
    r"""The paper's rule: the content of the last ``\boxed{...}`` (also ``\fbox{...}``
    and ``\boxed 5``), nested braces balanced; nothing else. No box, or a last box
    that is empty or never closed, gives no answer."""
    answer = final_box(text)
    return Extracted(answer, SOURCE_BOXED if answer is not None else SOURCE_NONE)


def with_fallbacks(text: str) -> Extracted:
    r"""The lenient rule, in order of preference:

    1. the content of the LAST complete ``\boxed{...}`` or ``\fbox{...}`` (nested
       braces balanced; ``\boxed 5`` also accepted; an unclosed or empty last box is
       skipped for the one before it), stripped;
    2. otherwise the text after the last "answer is" / "Answer:" phrase (case
       insensitive), on the same line: the content of a leading ``$...$``, ``\(...\)``
       or ``\[...\]`` span if there is one, else a leading number (an optional ``$``
       currency sign is dropped, thousands commas removed), else the rest of the line
       without a trailing period;
    3. otherwise the last number in the text: integers, decimals, negatives and
       fractions such as ``3/4``, with thousands commas removed ("1,234" -> "1234").

    Steps 2 and 3 are the "fallback" source.
    """
    boxed = last_boxed(text)
    if boxed is not None:
        return Extracted(boxed, SOURCE_BOXED)
    fallback = _after_answer_phrase(text)
    if fallback is None:
        fallback = _last_number(text)
    return Extracted(fallback, SOURCE_FALLBACK if fallback is not None else SOURCE_NONE)


EXTRACTORS: dict[str, Callable[[str], Extracted]] = {"boxed": boxed_only, "lenient": with_fallbacks}
EXTRACT_MODES = tuple(EXTRACTORS)
DEFAULT_EXTRACT = "boxed"
# Runs written before extraction modes existed graded with the fallbacks.
LEGACY_EXTRACT = "lenient"


def check_extract_mode(mode: str) -> str:
    if mode not in EXTRACTORS:
        raise EagerError(f"unknown extraction mode {mode!r}; choose from {', '.join(EXTRACT_MODES)}")
    return mode


def extract(text: str, mode: str = DEFAULT_EXTRACT) -> Extracted:
    """The final answer written in ``text`` under extraction ``mode``, and its source."""
    return EXTRACTORS[check_extract_mode(mode)](text)


def extract_answer(text: str) -> str | None:
    """The lenient answer of ``text`` (box, else "answer is", else the last number), or None."""
    return with_fallbacks(text).answer


# -- equivalence ------------------------------------------------------------------------


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


def _fatal(error: BaseException) -> bool:
    # math-verify's TimeoutException is a BaseException: catch broadly, but let these through
    return isinstance(error, (KeyboardInterrupt, SystemExit))


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

    def mv_timeout(self) -> int | None:
        """Math-Verify's timeout argument here: whole seconds, or None outside the main thread."""
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
        except BaseException as error:
            if _fatal(error):
                raise
            logger.warning(
                "grading failed (%s: %s); counted as wrong: answer=%.200r gold=%.200r",
                type(error).__name__, error, answer, gold,
            )
            return False

    def _verify(self, answer: str, gold: str) -> bool:
        from math_verify import parse, verify

        timeout = self.mv_timeout()
        gold_parsed = parse(_gold_latex(gold), parsing_timeout=timeout, raise_on_error=True)
        pred_parsed = parse(_prediction_latex(answer), parsing_timeout=timeout, raise_on_error=True)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout, raise_on_error=True))


@dataclass
class AnswerEquivalence:
    """``equivalence(first, second)``: are two extracted answers the same mathematical
    object? Math-Verify, with the grader's timeout; never raises.

    Each answer is parsed once and kept (one object can judge all the answers of a
    report); an answer that fails to parse or times out is equal only to answers
    written the same way (after the grader's quick normalisation). ``first`` is the
    reference side of Math-Verify's comparison (a vote group's representative).
    """

    grader: Grader = field(default_factory=Grader)
    _parsed: dict[str, Any] = field(default_factory=dict, repr=False)

    def __call__(self, first: str, second: str) -> bool:
        if _normalise(first) == _normalise(second):
            return True
        reference, candidate = self._parse(first), self._parse(second)
        if not reference or not candidate:
            return False
        try:
            from math_verify import verify

            timeout = self.grader.mv_timeout()
            return bool(verify(reference, candidate, timeout_seconds=timeout, raise_on_error=True))
        except BaseException as error:
            if _fatal(error):
                raise
            logger.warning("comparing answers failed (%s: %s); counted as different: %.200r vs %.200r",
                           type(error).__name__, error, first, second)
            return False

    def _parse(self, answer: str) -> Any:
        if answer not in self._parsed:
            self._parsed[answer] = self._parse_once(answer)
        return self._parsed[answer]

    def _parse_once(self, answer: str) -> Any:
        try:
            from math_verify import parse

            return parse(_prediction_latex(answer), parsing_timeout=self.grader.mv_timeout(), raise_on_error=True)
        except BaseException as error:
            if _fatal(error):
                raise
            logger.warning("parsing an answer failed (%s: %s); it votes only with identical answers: %.200r",
                           type(error).__name__, error, answer)
            return None


def grade(text: str, gold: str, grader: Grader = Grader(), mode: str = DEFAULT_EXTRACT) -> Graded:
    """Extract the answer from a model output under ``mode`` and grade it against ``gold``."""
    answer, source = extract(text, mode)
    return Graded(answer, source, grader.is_correct(answer, gold))
