import logging
import threading

import math_verify
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from math_verify.errors import TimeoutException

from eager.errors import EagerError
from eager.eval.datasets import Problem
from eager.eval.grading import (
    EXTRACT_MODES,
    AnswerEquivalence,
    Extracted,
    Grader,
    extract,
    extract_answer,
    final_box,
    grade,
    last_boxed,
)
from eager.eval.verify import GoldAnswerVerifier, SafeVerifier, answer_of, safe

# Lenient mode: (model output, gold, expected extracted answer, expected correctness)
GRADING_TABLE = [
    # GSM8K-style outputs
    ("Janet sells 16 - 3 - 4 = 9 eggs, so she makes $18 a day. \\boxed{18}", "18", "18", True),
    ("She makes 9 * 2 = 18 dollars.\n\n**Final answer:** \\boxed{18.00}", "18", "18.00", True),
    ("Each day she earns \\boxed{\\$18}", "18", "\\$18", True),
    ("The answer is 18.", "18", "18", True),
    ("So the total is 9 * 2. The answer is $18.", "18", "18", True),
    ("**Answer:** 1,234 apples", "1234", "1234", True),
    ("She pays 3 + 4 = 7 dollars in total.", "7", "7", True),
    ("He saved 1,500 + 2,500 = 4,000 dollars.", "4000", "4000", True),
    ("The temperature falls to -12 degrees.", "-12", "-12", True),
    ("The answer is 17.", "18", "17", False),
    ("\\boxed{18 \\text{ dollars}}", "18", "18 \\text{ dollars}", True),
    ("\\boxed{1{,}000}", "1000", "1{,}000", True),
    ("I am not sure how to solve this.", "3", None, False),
    # MATH-style outputs
    ("Hence $x = \\boxed{\\frac{1}{2}}$.", "0.5", "\\frac{1}{2}", True),
    ("\\boxed{0.5}", "\\frac{1}{2}", "0.5", True),
    (
        "The polar coordinates are $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
        "\\left( 3, \\frac{\\pi}{2} \\right)",
        "\\left( 3, \\frac{\\pi}{2} \\right)",
        True,
    ),
    ("\\boxed{(3, \\pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)", True),
    ("$\\boxed{\\frac{\\sqrt{3}}{2}}$", "\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{3}}{2}", True),
    ("Simplify: \\boxed{x^{2^{3}}}", "x^8", "x^{2^{3}}", True),
    ("\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}", "\\dfrac{14}{3}", True),
    ("\\boxed{-\\frac{2}{3}}", "-\\dfrac{2}{3}", "-\\frac{2}{3}", True),
    ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", "\\sqrt{8}", True),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", "x^2+2x+1", True),
    ("\\boxed{\\{1,2\\}}", "\\{2,1\\}", "\\{1,2\\}", True),
    ("\\boxed{[1,2)}", "[1,2)", "[1,2)", True),
    ("\\boxed{(1,2]}", "[1,2)", "(1,2]", False),
    ("The solutions are \\boxed{2, -2}", "-2, 2", "2, -2", True),
    ("So $x = \\boxed{x = 2}$", "2", "x = 2", True),
    ("\\boxed{90^\\circ}", "90", "90^\\circ", True),
    ("\\boxed{\\text{(C)}}", "C", "\\text{(C)}", True),
    ("\\boxed{A}", "B", "A", False),
    ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", "\\text{Evelyn}", True),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
     "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", True),
    ("\\boxed{\\infty}", "\\infty", "\\infty", True),
    ("\\boxed{0.333}", "\\frac{1}{3}", "0.333", False),
    ("\\boxed{\\pi}", "3.14", "\\pi", False),
    ("The final answer is $\\frac{3}{4}$.", "0.75", "\\frac{3}{4}", True),
    ("so half of the cake, 3/4 of the pie", "\\frac{3}{4}", "3/4", True),
    # box forms and positions
    ("First I got \\boxed{5}, but rechecking: \\boxed{6}", "6", "6", True),
    ("First I got \\boxed{5}, but rechecking: \\boxed{6}", "5", "6", False),
    ("thus $\\boxed 5$.", "5", "5", True),
    ("thus \\fbox{7}", "7", "7", True),
    ("the distance is \\boxed {17}.", "17", "17", True),
    ("\\boxed{3} ... wait, let me redo this: \\boxed{\\frac{1}{2", "3", "3", True),
    # garbage that must not crash
    ("\\boxed{\\frac{}{}}", "0", "\\frac{}{}", False),
    ("\\boxed{\\frac{a}{b}+\\left(\\right.}", "1", "\\frac{a}{b}+\\left(\\right.", False),
    ("\\boxed{{}{}{}\\\\\\\\}", "1", "{}{}{}\\\\\\\\", False),
    ("\\boxed{3+}", "3", "3+", False),
    ("\\boxed{}", "0", None, False),
]


@pytest.mark.parametrize(("text", "gold", "answer", "correct"), GRADING_TABLE)
def test_lenient_grading_table_of_model_outputs_extracts_and_grades_as_expected(text, gold, answer, correct):
    graded = grade(text, gold, mode="lenient")
    assert (graded.answer, graded.correct) == (answer, correct)


@pytest.mark.parametrize(("text", "gold", "answer", "correct"), GRADING_TABLE)
def test_boxed_mode_keeps_the_lenient_answer_only_when_it_is_the_final_box(text, gold, answer, correct):
    lenient = extract(text, "lenient")
    boxed = grade(text, gold, mode="boxed")
    if boxed.source == "boxed":
        assert (lenient.source, boxed.answer, boxed.correct) == ("boxed", answer, correct)
    else:
        assert (boxed.answer, boxed.correct) == (None, False)


B, F, N = "boxed", "fallback", "none"

# Real-looking outputs: (text, boxed mode's (answer, source), lenient mode's (answer, source))
EXTRACTION_TABLE = [
    # nested braces
    ("So the ratio is $\\boxed{\\frac{\\sqrt{3}}{2}}$.", ("\\frac{\\sqrt{3}}{2}", B), ("\\frac{\\sqrt{3}}{2}", B)),
    ("x = \\boxed{\\left\\{1, 2^{3}\\right\\}}", ("\\left\\{1, 2^{3}\\right\\}", B), ("\\left\\{1, 2^{3}\\right\\}", B)),
    # several boxes: the last one counts
    ("Partial: \\boxed{12}. Then 12 * 3 = 36, so the total is \\boxed{36}.", ("36", B), ("36", B)),
    ("\\boxed{a} and \\boxed{b}\n\nFinal: \\boxed{ 7 }", ("7", B), ("7", B)),
    # box forms
    ("Therefore the answer is $\\boxed 5$.", ("5", B), ("5", B)),
    ("the distance is \\boxed {17} km.", ("17", B), ("17", B)),
    ("Final answer: \\fbox{42}", ("42", B), ("42", B)),
    ("\\boxed{3} then \\fbox{4}", ("4", B), ("4", B)),
    # no box: the paper's rule has no answer; lenient falls back
    ("so in total we get 70", (None, N), ("70", F)),
    ("The answer is 18.", (None, N), ("18", F)),
    ("**Answer:** 1,234 apples", (None, N), ("1234", F)),
    ("Let me think step by step. First, 12 trays", (None, N), ("12", F)),
    ("I am not sure how to solve this.", (None, N), (None, N)),
    ("", (None, N), (None, N)),
    # truncated box (cut off by the token limit): no answer under the paper's rule
    ("\\boxed{3} ... wait, let me redo this: \\boxed{\\frac{1}{2", (None, N), ("3", B)),
    ("We get 5 apples, so \\boxed{", (None, N), ("5", F)),
    ("The answer is 9, so \\boxed{\\frac{9}{", (None, N), ("9", F)),
    # empty or bare box commands
    ("\\boxed{}", (None, N), (None, N)),
    ("\\boxed{4} and then \\boxed{}", (None, N), ("4", B)),
    ("ends with \\boxed", (None, N), (None, N)),
    ("\\boxedsomething{3}", (None, N), ("3", F)),
    # a box inside the reasoning, then more text: still the last box
    ("<think>maybe \\boxed{2}?</think> The result is 3.", ("2", B), ("2", B)),
]


@pytest.mark.parametrize(("text", "boxed", "lenient"), EXTRACTION_TABLE)
def test_extraction_table_in_both_modes(text, boxed, lenient):
    assert extract(text, "boxed") == Extracted(*boxed)
    assert extract(text, "lenient") == Extracted(*lenient)


def test_boxed_is_the_default_mode_and_unknown_modes_list_the_valid_ones():
    assert extract("so in total we get 70") == (None, "none")
    with pytest.raises(EagerError, match="'loose'; choose from boxed, lenient"):
        extract("x", "loose")


def test_final_box_does_not_fall_back_to_an_earlier_box():
    assert final_box("\\boxed{1} then \\boxed{2 and never closed") is None
    assert last_boxed("\\boxed{1} then \\boxed{2 and never closed") == "1"


def test_grade_returns_the_answer_its_source_and_the_verdict():
    assert grade("so in total we get 70", "70") == (None, "none", False)
    assert grade("so in total we get 70", "70", mode="lenient") == ("70", "fallback", True)
    assert grade("thus \\boxed{0.5}", "\\frac{1}{2}") == ("0.5", "boxed", True)


# -- never raising ------------------------------------------------------------------------

FRAGMENTS = ["\\boxed", "\\fbox", "{", "}", "\\{", "\\}", " ", "\n", "$", "answer is", "Answer:", "12",
             "-3.5", "1,234", "7/8", "\\frac{1}{2}", "\\(", "\\)", "\\[", "\\]", "x", ".", "**", "\\"]
outputs = st.one_of(st.text(max_size=300), st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join))


@settings(max_examples=300, deadline=None)
@given(text=outputs, mode=st.sampled_from(EXTRACT_MODES))
def test_extraction_never_raises_and_returns_an_answer_with_its_source(text, mode):
    answer, source = extract(text, mode)
    assert (answer is None) == (source == "none")
    assert source in ("boxed", "fallback", "none") and (mode == "lenient" or source != "fallback")
    assert answer is None or answer.strip() == answer and answer


@settings(max_examples=300, deadline=None)
@given(text=outputs)
def test_a_boxed_mode_answer_is_always_the_lenient_answer(text):
    boxed = extract(text, "boxed")
    assert boxed.answer is None or extract(text, "lenient") == boxed


def test_extraction_of_many_unclosed_boxes_stays_linear():
    text = "\\boxed{" * 20000 + "so 5"
    assert extract(text, "lenient") == ("5", "fallback")
    assert extract(text, "boxed") == (None, "none")


# -- verifiers carry the mode ---------------------------------------------------------------

PROBLEM = Problem(id="p", question="q", gold="70")


def test_the_gold_answer_verifier_grades_under_its_mode():
    assert GoldAnswerVerifier()(PROBLEM, "so in total we get 70") is False
    assert GoldAnswerVerifier(extract="lenient")(PROBLEM, "so in total we get 70") is True
    with pytest.raises(EagerError, match="extraction mode"):
        GoldAnswerVerifier(extract="loose")


def test_safe_gives_the_run_mode_to_the_gold_verifier_and_to_the_recorded_answers():
    verify = safe(GoldAnswerVerifier(), extract="lenient")
    assert isinstance(verify, SafeVerifier) and verify(PROBLEM, "so in total we get 70") is True
    assert answer_of(verify, "so in total we get 70") == ("70", "fallback")
    assert answer_of(safe(GoldAnswerVerifier()), "so in total we get 70") == (None, "none")


def test_a_custom_verifier_decides_correctness_and_the_mode_decides_the_answer():
    verify = safe(lambda problem, text: "q" in text, extract="lenient")
    assert verify(PROBLEM, "q 5") is True
    assert answer_of(verify, "q 5") == ("5", "fallback")
    assert answer_of(lambda problem, text: True, "q 5") == (None, "none")  # a bare function: the default mode


# -- equivalence of two answers -------------------------------------------------------------


def test_answer_equivalence_finds_equal_values_written_differently():
    same = AnswerEquivalence()
    assert same("\\frac{1}{2}", "0.5") and same("x^2+2x+1", "(x+1)^2") and same("18", " 18 ")
    assert not same("1", "2") and not same("\\frac{1}{3}", "0.333")


def test_answer_equivalence_parses_each_answer_once_and_a_failed_parse_only_matches_its_spelling(monkeypatch, caplog):
    calls = []

    def failing_parse(text, **kwargs):
        calls.append(text)
        raise TimeoutException("Operation timed out!")

    monkeypatch.setattr(math_verify, "parse", failing_parse)
    same = AnswerEquivalence()
    with caplog.at_level(logging.WARNING, logger="eager.eval.grading"):
        assert not same("\\frac{1}{2}", "0.5") and not same("\\frac{1}{2}", "0.25")
        assert same("\\frac{1}{2}", "\\frac {1}{2}")
    assert sorted(calls) == sorted({"\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{0.25}"})
    assert "TimeoutException" in caplog.text


def test_answer_equivalence_counts_a_failing_comparison_as_different(monkeypatch):
    def broken_verify(*args, **kwargs):
        raise RuntimeError("sympy exploded")

    monkeypatch.setattr(math_verify, "verify", broken_verify)
    assert AnswerEquivalence()("\\frac{1}{2}", "0.5") is False


def test_last_boxed_balances_nested_braces():
    assert last_boxed("x \\boxed{\\frac{a^{2}}{\\sqrt{b}}} y") == "\\frac{a^{2}}{\\sqrt{b}}"


def test_last_boxed_skips_an_unclosed_final_box_and_uses_the_previous_one():
    assert last_boxed("\\boxed{1} then \\boxed{2 and never closed") == "1"


def test_last_boxed_ignores_commands_that_only_start_with_boxed():
    assert last_boxed("\\boxedsomething{3}") is None


def test_last_boxed_returns_none_without_a_box():
    assert last_boxed("plain text 42") is None


def test_extract_answer_is_the_lenient_answer_and_prefers_the_box_over_an_answer_phrase():
    assert extract_answer("The answer is 4. Actually \\boxed{5}") == "5"


def test_extract_answer_uses_the_last_answer_phrase():
    assert extract_answer("answer is 3\nthe answer is: 4\nbecause 7 > 2") == "4"


def test_extract_answer_phrase_keeps_non_numeric_text_without_trailing_period():
    assert extract_answer("The answer is x + 1.") == "x + 1"


def test_extract_answer_phrase_takes_a_leading_math_span():
    assert extract_answer("Answer: \\(\\sqrt{2}\\) since it is irrational") == "\\sqrt{2}"


def test_extract_answer_last_number_handles_decimals_and_fractions():
    assert extract_answer("first 2, then 3.25") == "3.25"
    assert extract_answer("first 2, then 7/8") == "7/8"


def test_extract_answer_does_not_split_identifiers_or_decimals():
    assert extract_answer("variable x2 is 0.75") == "0.75"


def test_extract_answer_returns_none_for_text_without_numbers():
    assert extract_answer("no digits here") is None


def test_grader_returns_false_for_missing_answer():
    assert Grader().is_correct(None, "3") is False


def test_grader_quick_path_accepts_identical_latex_up_to_spacing_and_left_right():
    assert Grader().is_correct("\\left(1,2\\right)", "( 1 , 2 )") is True


def test_grader_quick_path_does_not_accept_two_empty_answers():
    assert Grader().is_correct("", "") is False


def test_grader_rejects_non_positive_timeout():
    with pytest.raises(EagerError, match="timeout_s"):
        Grader(timeout_s=0)


def test_grader_counts_a_math_verify_timeout_as_wrong_and_logs_a_warning(monkeypatch, caplog):
    def slow_parse(*args, **kwargs):
        raise TimeoutException("Operation timed out!")

    monkeypatch.setattr(math_verify, "parse", slow_parse)
    with caplog.at_level(logging.WARNING, logger="eager.eval.grading"):
        assert Grader().is_correct("\\frac{1}{2}", "0.5") is False
    assert "TimeoutException" in caplog.text


def test_grader_counts_any_math_verify_exception_as_wrong(monkeypatch, caplog):
    def broken_verify(*args, **kwargs):
        raise RuntimeError("sympy exploded")

    monkeypatch.setattr(math_verify, "verify", broken_verify)
    with caplog.at_level(logging.WARNING, logger="eager.eval.grading"):
        assert Grader().is_correct("\\frac{1}{2}", "0.5") is False
    assert "sympy exploded" in caplog.text


def test_grader_works_outside_the_main_thread_without_signal_timeouts():
    results = []
    worker = threading.Thread(target=lambda: results.append(Grader().is_correct("\\frac{1}{2}", "0.5")))
    worker.start()
    worker.join(timeout=30)
    assert results == [True]


def test_grader_passes_whole_second_timeouts_to_math_verify_in_the_main_thread(monkeypatch):
    seen = {}

    def recording_verify(gold, pred, **kwargs):
        seen["timeout"] = kwargs["timeout_seconds"]
        return True

    monkeypatch.setattr(math_verify, "verify", recording_verify)
    assert Grader(timeout_s=2.5).is_correct("\\frac{1}{2}", "0.5") is True
    assert seen["timeout"] == 3
