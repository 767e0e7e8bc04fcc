"""`eager grade`: how one output is graded, as a user debugging grading sees it."""

from __future__ import annotations

import io
import json

import pytest

from eager.cli import main


def grade_json(capsys, *argv: str) -> dict:
    assert main(["grade", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_an_unboxed_chain_is_wrong_under_the_default_boxed_extraction(capsys):
    assert grade_json(capsys, "--gold", "70", "so in total we get 70") == {"answer": None, "source": "none", "correct": False}


def test_lenient_extraction_takes_the_last_number_as_a_fallback(capsys):
    got = grade_json(capsys, "--gold", "70", "--extract", "lenient", "so in total we get 70")
    assert got == {"answer": "70", "source": "fallback", "correct": True}


def test_a_boxed_decimal_equals_a_gold_fraction(capsys):
    assert grade_json(capsys, "--gold", "\\frac{1}{2}", "thus \\boxed{0.5}") == {"answer": "0.5", "source": "boxed", "correct": True}


def test_a_truncated_last_box_has_no_answer_in_boxed_mode_only(capsys):
    text = "\\boxed{3} ... wait, let me redo this: \\boxed{\\frac{1}{2"
    assert grade_json(capsys, "--gold", "3", text)["source"] == "none"
    assert grade_json(capsys, "--gold", "3", "--extract", "lenient", text) == {"answer": "3", "source": "boxed", "correct": True}


def test_the_text_view_shows_answer_source_and_verdict(capsys):
    assert main(["grade", "--gold", "\\frac{1}{2}", "thus \\boxed{0.5}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["answer:", "0.5"]
    assert out[1].startswith("source:") and "boxed" in out[1]
    assert out[2].startswith("correct: yes")
    assert main(["grade", "--gold", "70", "so in total we get 70"]) == 0
    out = capsys.readouterr().out
    assert "(none)" in out and "correct: no" in out


def test_a_dash_reads_the_output_from_standard_input(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("Long reasoning...\nSo the answer is \\boxed{42}.\n"))
    assert grade_json(capsys, "--gold", "42", "-") == {"answer": "42", "source": "boxed", "correct": True}


class UnreadableStdin:
    def read(self):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--gold", " ", "\\boxed{1}"], ["--gold is empty"]),
        (["--gold", "1", "--grade-timeout", "0", "\\boxed{1}"], ["timeout"]),
        (["--gold", "1", "-"], ["standard input"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, monkeypatch, argv, words):
    monkeypatch.setattr("sys.stdin", UnreadableStdin())
    assert main(["grade", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eager: error: ") and err.count("\n") == 1
    assert all(word in err for word in words)


@pytest.mark.parametrize("argv", [["\\boxed{1}"], ["--gold", "1", "--extract", "loose", "\\boxed{1}"]])
def test_a_missing_gold_or_an_unknown_mode_is_a_usage_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(["grade", *argv])
    assert exit_.value.code == 2
    assert "eager grade: error:" in capsys.readouterr().err


def test_grade_is_listed_and_its_help_states_both_modes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "grade" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["grade", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "{boxed,lenient}" in out and "(default: boxed)" in out and "--json" in out
