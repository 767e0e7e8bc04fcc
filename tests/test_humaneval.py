"""HumanEval: the prompt, the code of a completion, pass@k for code, and evals on the mock and SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eager.backends.mock import EOG_ID, MockBackend, default_logits
from eager.cli import main
from eager.errors import EagerError
from eager.eval import EvalConfig, run_eval
from eager.eval.code import CODE_TEMPLATE, SOURCE_BLOCK, SOURCE_COMPLETION, SOURCE_EMPTY, CodeProblem, CodeVerifier, extract_code, program
from eager.eval.datasets import DEFAULT_TEMPLATE, format_prompt, load_problems
from eager.eval.metrics import unbiased_pass_at_k
from eager.eval.report import build_summary, render_markdown
from eager.eval.sandbox import REASONS, bubblewrap_problem

SANDBOX = bubblewrap_problem() is None
needs_sandbox = pytest.mark.skipif(not SANDBOX, reason=f"no sandbox: {bubblewrap_problem()}")


@pytest.fixture(scope="module")
def first():
    return load_problems("humaneval", limit=1)[0]


# -- the data set and the prompt -------------------------------------------------------------


def test_humaneval_loads_its_164_problems_offline_with_tests_and_entry_points():
    problems = load_problems("humaneval")
    assert len(problems) == 164 and problems[0].id == "HumanEval/0" and problems[-1].id == "HumanEval/163"
    assert all(isinstance(p, CodeProblem) and f"def {p.entry_point}(" in p.question and "def check(" in p.test for p in problems)
    with pytest.raises(EagerError, match="no split 'train'"):
        load_problems("humaneval", split="train")


def test_the_default_template_asks_a_chat_model_for_the_function_in_a_python_block(first):
    prompt = format_prompt(first)
    assert prompt == CODE_TEMPLATE.format(question=first.question)
    assert prompt.endswith(first.question + "```") and "```python" in prompt
    assert format_prompt(first, "{question}") == first.question  # a template given is kept (base models)
    assert format_prompt(first, DEFAULT_TEMPLATE) == prompt


# -- extraction -----------------------------------------------------------------------------

EXTRACTION = [
    ("text\n```python\ndef f():\n    return 1\n```\nmore", "def f():\n    return 1\n", SOURCE_BLOCK),
    ("```python\na = 1\n```\n```python\nb = 2\n```", "b = 2\n", SOURCE_BLOCK),  # the last python block
    ("```py\nx = 1\n```", "x = 1\n", SOURCE_BLOCK),
    ("```python\nx = 1\n```\n```bash\nrm -rf /\n```", "x = 1\n", SOURCE_BLOCK),  # other languages are skipped
    ("```\nplain = 1\n```", "plain = 1\n", SOURCE_BLOCK),  # an unlabelled block when no python block
    ("```\nplain = 1\n```\n```python\nlabelled = 1\n```", "labelled = 1\n", SOURCE_BLOCK),
    ("```python\ndef f():\n    return", "def f():\n    return", SOURCE_BLOCK),  # cut off at max tokens
    ("    return a + b\n", "    return a + b\n", SOURCE_COMPLETION),  # no block: the completion itself
    ("  \n", None, SOURCE_EMPTY),
]


@pytest.mark.parametrize(("completion", "code", "source"), EXTRACTION)
def test_the_code_is_the_last_python_block_else_the_completion(completion, code, source):
    assert tuple(extract_code(completion)) == (code, source)


def test_a_block_defining_the_function_follows_the_prompt_and_a_body_continues_it(first):
    whole = program(first, "```python\ndef has_close_elements(numbers, threshold):\n    return True\n```")
    assert whole.index(first.question.rstrip()) < whole.index("return True") < whole.index("def check(")
    assert whole.rstrip().endswith("check(has_close_elements)")
    body = program(first, "    return True\n")
    assert body.startswith(first.question + "    return True\n")
    assert program(first, "") is None


# -- pass@k for code --------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2)
    (8, 2, 4, 1 - 15 / 70),  # 1 - C(6,4)/C(8,4)
    (8, 2, 2, 1 - 15 / 28),  # 1 - C(6,2)/C(8,2)
    (8, 0, 8, 0.0),
    (8, 1, 8, 1.0),
    (8, 2, 1, 2 / 8),
])
def test_unbiased_pass_at_k_matches_the_binomials_by_hand(n, c, k, expected):
    assert unbiased_pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def code_record(problem_id: str, passes: list[bool], method: str = "parallel") -> dict:
    sequences = [
        {"text": "x", "n_tokens": 5, "answer": None, "answer_source": SOURCE_BLOCK, "correct": ok, "passed": ok,
         "reason": None if ok else "assertion", "finish_reason": "stop"}
        for ok in passes
    ]
    return {"id": problem_id, "M": len(passes), "method": method, "generated_tokens": 5 * len(passes), "wall_s": 1.0, "sequences": sequences}


def test_a_code_report_gives_unbiased_pass_at_k_up_to_8_and_says_cons_at_k_is_not_defined():
    records = {"parallel": [code_record("a", [True, True] + [False] * 14), code_record("b", [False] * 16)]}
    config = {"dataset": "humaneval", "M": [16], "verifier": CodeVerifier.label, "methods": ["parallel"]}
    row = build_summary(config, records)["methods"]["parallel"]
    assert row["unbiased_pass_at_k"] == pytest.approx(
        {str(k): (unbiased_pass_at_k(16, 2, k) + 0.0) / 2 for k in (1, 2, 4, 8)}
    )
    assert row["unbiased_pass_at_k"]["1"] == pytest.approx(1 / 16)
    assert (row["pass_at_k"], row["pass_rate"], row["cons_at_k"], row["cons_at_k_exact"]) == (0.5, 2 / 32, None, None)
    assert row["failures"] == {"passed": 2, "assertion": 30}
    text = render_markdown(build_summary(config, records))
    assert "Cons@k is not defined for code" in text and "Cons@16" not in text and "| k=8 |" in text
    assert "| 2 | 30 |" in text  # sequences by outcome


def test_a_math_report_keeps_its_cons_at_k():
    sequences = [{"n_tokens": 3, "answer": "4", "correct": True, "finish_reason": "stop"}] * 2
    records = {"parallel": [{"id": "p", "M": 2, "generated_tokens": 6, "wall_s": 1.0, "sequences": sequences}]}
    summary = build_summary({"dataset": "gsm8k", "M": [2], "verifier": "gold-answer (math-verify)"}, records)
    assert "grading" not in summary and summary["methods"]["parallel"]["cons_at_k"] == 1.0
    assert "Cons@2" in render_markdown(summary)


# -- evals on the mock -------------------------------------------------------------------------


def chatty_mock() -> MockBackend:
    """The mock, but its end-of-generation logit looks at the last tokens only (HumanEval prompts are long)."""
    rows = default_logits(32)

    def logits(history: tuple[int, ...]) -> np.ndarray:
        row = rows(history[-6:])
        row[EOG_ID] = -3.0
        return row

    return MockBackend(logits_fn=logits)


def humaneval_config(tmp_path: Path, **overrides) -> EvalConfig:
    settings = dict(out_dir=tmp_path / "out", dataset="humaneval", model="mock", M=(4,), theta=2.98, dynamic_theta=False, max_tokens=24, limit=4)
    return EvalConfig.of(**{**settings, **overrides})


def holds_q(problem, text: str) -> bool:
    return "q" in text


def test_full_eager_gives_the_saved_budget_only_to_problems_with_no_passing_sequence(tmp_path):
    summary = run_eval(humaneval_config(tmp_path, limit=6), backend=chatty_mock(), verifier=holds_q)
    out = tmp_path / "out"
    init = {r["id"]: r for r in map(json.loads, (out / "eager-init.jsonl").read_text().splitlines())}
    full = {r["id"]: r for r in map(json.loads, (out / "eager.jsonl").read_text().splitlines())}
    unsolved = {i for i, r in init.items() if not any(s["correct"] for s in r["sequences"])}
    assert unsolved and unsolved != set(init), "the mock setup must have solved and unsolved problems"
    assert {i for i, r in full.items() if r["extra"] > 0} <= unsolved
    assert sum(r["extra"] for r in full.values()) > 0
    assert summary["grading"]["cons_at_k"].startswith("Cons@k is not defined")
    assert all(row["cons_at_k"] is None for row in summary["methods"].values())


@pytest.mark.sandbox
@needs_sandbox
def test_by_default_code_is_run_in_the_sandbox_and_each_sequence_says_why_it_failed(tmp_path):
    summary = run_eval(humaneval_config(tmp_path, limit=2, grade_timeout_s=3.0, methods="parallel"), backend=chatty_mock())
    records = [json.loads(line) for line in (tmp_path / "out" / "parallel.jsonl").read_text().splitlines()]
    sequences = [s for r in records for s in r["sequences"]]
    assert len(sequences) == 8 and all(s["passed"] is False and s["correct"] is False for s in sequences)
    assert {s["reason"] for s in sequences} <= set(REASONS) - {"timeout"}  # letter soup: a NameError or nothing
    assert any(s["reason"] == "exception" and "NameError" in s["stderr"] for s in sequences)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["verifier"] == CodeVerifier.label
    assert summary["methods"]["parallel"]["failures"].get("passed", 0) == 0


def test_without_the_sandbox_an_eval_is_refused_before_anything_is_written_unless_unsafe(tmp_path, monkeypatch):
    bubblewrap_problem.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no bwrap to find
    try:
        with pytest.raises(EagerError, match="--unsafe-exec"):
            run_eval(humaneval_config(tmp_path, limit=1, methods="parallel"), backend=chatty_mock())
        assert not (tmp_path / "out" / "config.json").exists()
        config = humaneval_config(tmp_path, limit=1, methods="parallel", unsafe_exec=True, grade_timeout_s=3.0)
        run_eval(config, backend=chatty_mock())
        record = json.loads((tmp_path / "out" / "parallel.jsonl").read_text().splitlines()[0])
        assert all(s["reason"] in REASONS for s in record["sequences"])
        assert json.loads((tmp_path / "out" / "config.json").read_text())["unsafe_exec"] is True
    finally:
        bubblewrap_problem.cache_clear()


# -- the real path ----------------------------------------------------------------------------


@pytest.mark.sandbox
@needs_sandbox
def test_eager_eval_on_humaneval_with_smollm2_writes_records_with_passed_and_a_reason(tmp_path):
    out = tmp_path / "he"
    argv = ["eval", "--model", "smollm2-135m", "--dataset", "humaneval", "--limit", "3", "-M", "2", "--max-tokens", "64",
            "--methods", "parallel,eager-init", "--out", str(out), "--threads", "2"]
    assert main(argv) == 0
    for method in ("parallel", "eager-init"):
        records = [json.loads(line) for line in (out / f"{method}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in sorted(records, key=lambda r: r["id"])] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
        for sequence in (s for r in records for s in r["sequences"]):
            assert isinstance(sequence["passed"], bool) and sequence["passed"] == sequence["correct"]
            assert (sequence["reason"] is None) == sequence["passed"] and (sequence["passed"] or sequence["reason"] in REASONS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "humaneval" and summary["methods"]["parallel"]["cons_at_k"] is None
    assert "Cons@k is not defined for code" in (out / "summary.md").read_text()


class SlowToGrade:
    """A verifier that grades in the background: each text is ready only after it was asked about 3 times."""

    def __init__(self) -> None:
        self.asked: dict[str, int] = {}
        self.prefetched = 0

    def prefetch(self, problem, texts) -> None:
        self.prefetched += len(texts)

    def ready(self, problem, texts) -> bool:
        for text in texts:
            self.asked[text] = self.asked.get(text, 0) + 1
        return all(self.asked[text] >= 3 for text in texts)

    def __call__(self, problem, text: str) -> bool:
        return "q" in text


def test_trees_whose_grading_is_still_running_are_written_later_and_none_is_lost(tmp_path):
    verify = SlowToGrade()
    summary = run_eval(humaneval_config(tmp_path, limit=6), backend=chatty_mock(), verifier=verify)
    out = tmp_path / "out"
    for method in ("parallel", "eager-init", "eager-adapt", "eager"):
        assert len((out / f"{method}.jsonl").read_text().splitlines()) == 6
    assert verify.prefetched >= 6 * 4 and max(verify.asked.values()) >= 3
    assert summary["methods"]["eager"]["n_prompts"] == 6


def test_config_json_records_the_code_template_the_prompts_used_and_an_older_run_still_resumes(tmp_path):
    config = humaneval_config(tmp_path, limit=2, methods="parallel")
    run_eval(config, backend=chatty_mock(), verifier=holds_q)
    path = tmp_path / "out" / "config.json"
    stored = json.loads(path.read_text())
    assert stored["template"] == CODE_TEMPLATE
    stored["template"] = DEFAULT_TEMPLATE  # as runs written before this recorded it
    path.write_text(json.dumps(stored))
    before = (tmp_path / "out" / "parallel.jsonl").read_text()
    run_eval(config, backend=chatty_mock(), verifier=holds_q)  # resumes: nothing to do, nothing refused
    assert (tmp_path / "out" / "parallel.jsonl").read_text() == before
