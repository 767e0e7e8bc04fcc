import logging
import threading

import math_verify
import pytest
from math_verify.errors import TimeoutException

from eager.errors import EagerError
from eager.eval.grading import Grader, extract_answer, grade, last_boxed

# (model output, gold, expected extracted answer, expected correctness)
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
def test_grade_table_of_model_outputs_extracts_and_grades_as_expected(text, gold, answer, correct):
    assert grade(text, gold) == (answer, correct)


def test_last_boxed_balances_nested_braces():
    assert last_boxed("x \\boxed{\\frac{a^{2}}{\\sqrt{b}}} y") == "\\frac{a^{2}}{\\sqrt{b}}"


def test_last_boxed_skips_an_unclosed_final_box_and_uses_the_previous_one():
    assert last_boxed("\\boxed{1} then \\boxed{2 and never closed") == "1"


def test_last_boxed_ignores_commands_that_only_start_with_boxed():
    assert last_boxed("\\boxedsomething{3}") is None


def test_last_boxed_returns_none_without_a_box():
    assert last_boxed("plain text 42") is None


def test_extract_answer_prefers_the_box_over_an_answer_phrase():
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
