"""`eager eval` and `eager report`: the runner's rules, on the mock backend.

The mock decodes token ids to letters, so the real grader marks every answer
wrong; a fake verifier ("the text contains a q") gives a mix of solved and
unsolved prompts, which is what full EAGER's hard-prompt selection needs.
One end-to-end test runs the CLI on SmolLM2-135M.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from eager.backends.mock import FIRST_TEXT_ID, THINK_END_ID, MockBackend, MockTokenizer
from eager.eval.budget import adapt_plan, full_plan, retry_theta
from eager.cli import main
from eager.errors import EagerError
from eager.eval import EVAL_METHODS, EvalConfig, Progress, run_eval

METHODS = tuple(EVAL_METHODS)
from eager.eval.metrics import summarize
from eager.eval.report import write_report

N_PROBLEMS = 8
RECORD_FIELDS = {"id", "question", "gold", "M", "generated_tokens", "wall_s", "forks", "sequences"}
SEQUENCE_FIELDS = {"text", "n_tokens", "parent", "fork_at", "finish_reason", "answer", "answer_source", "correct", "round"}
TIMING = ("wall_s", "latency_s")


def contains_q(problem, text: str) -> bool:
    """A fake reward: the mock's letter soup is 'correct' when it holds a q."""
    return "q" in text


def never(problem, text: str) -> bool:
    return False


def make_config(tmp_path: Path, dataset: Path, out: str = "out", **overrides) -> EvalConfig:
    # Short prompts: the mock's end-of-generation logit grows with the history length.
    # theta 2.98 with a fixed threshold gives a mix of capped and uncapped trees on the mock.
    settings = dict(
        out_dir=tmp_path / out, dataset=str(dataset), model="mock", M=(4,), theta=2.98, dynamic_theta=False,
        max_tokens=40, template="{question}",
    )
    settings.update(overrides)
    return EvalConfig.of(**settings)


def evaluate(config: EvalConfig, verifier=contains_q, on_progress=None) -> dict:
    return run_eval(config, backend=MockBackend(), verifier=verifier, on_progress=on_progress)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def records(config: EvalConfig, method: str) -> list[dict]:
    return lines(Path(config.out_dir) / f"{method}.jsonl")


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {row["id"]: row for row in rows}


def without_timing(rows: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in row.items() if k not in TIMING} for row in rows), key=lambda r: (r["id"], r["M"], r.get("attempt", 0)))


def problem_order(config: EvalConfig) -> list[str]:
    """Problem ids in dataset order (the order budget plans index)."""
    return [f"p{i}" for i in range(N_PROBLEMS)]


# -- outputs ----------------------------------------------------------------------------


def test_every_output_file_is_written_and_records_have_the_fields(tmp_path, dataset):
    config = make_config(tmp_path, dataset)
    evaluate(config)
    out = Path(config.out_dir)
    for name in ("config.json", "summary.json", "summary.md", "tradeoff.png", *(f"{m}.jsonl" for m in METHODS)):
        assert (out / name).is_file(), name
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for method in METHODS:
        rows = records(config, method)
        assert sorted(r["id"] for r in rows) == problem_order(config)
        for row in rows:
            assert RECORD_FIELDS <= set(row)
            assert row["method"] == method and row["M"] == 4 and isinstance(row["forks"], int)
            assert row["sequences"] and all(SEQUENCE_FIELDS <= set(s) for s in row["sequences"])
            assert row["sequence_tokens"] == sum(s["n_tokens"] for s in row["sequences"])
            assert all(s["correct"] == ("q" in s["text"]) for s in row["sequences"])
    markdown = (out / "summary.md").read_text()
    for method in METHODS:
        assert f"| {method} | 4 |" in markdown


def test_summary_numbers_equal_summarize_of_the_records(tmp_path, dataset):
    config = make_config(tmp_path, dataset)
    summary = evaluate(config)
    on_disk = json.loads((Path(config.out_dir) / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert (summary["model"], summary["dataset"], summary["n_prompts"], summary["seed"]) == ("mock", str(dataset), N_PROBLEMS, 0)
    assert set(summary["methods"]) == set(METHODS)
    for method in METHODS:
        expected = summarize(records(config, method))
        assert {k: summary["methods"][method][k] for k in expected} == expected
    parallel = summary["methods"]["parallel"]
    assert parallel["sequences"] == 4 * N_PROBLEMS
    init = summary["methods"]["eager-init"]
    assert init["tokens_saved_vs_parallel"] == pytest.approx(1 - init["generated_tokens"] / parallel["generated_tokens"])


def test_several_budgets_key_the_summary_by_method_and_M(tmp_path, dataset):
    config = make_config(tmp_path, dataset, M=(4, 2), methods="parallel,eager-adapt")
    summary = evaluate(config)
    assert summary["M"] == [2, 4]
    assert set(summary["methods"]) == {f"{m}@M={M}" for m in ("parallel", "eager-adapt") for M in (2, 4)}
    rows = records(config, "parallel")
    assert Counter(r["M"] for r in rows) == {2: N_PROBLEMS, 4: N_PROBLEMS}
    assert summary["methods"]["parallel@M=2"]["sequences"] == 2 * N_PROBLEMS
    assert summary["methods"]["parallel@M=2"] == {"method": "parallel", "M": 2, **summarize([r for r in rows if r["M"] == 2]), "tokens_saved_vs_parallel": 0.0}


def test_eager_init_trees_are_recorded_but_not_reported_when_only_eager_adapt_is_asked(tmp_path, dataset):
    config = make_config(tmp_path, dataset, methods="eager-adapt")
    summary = evaluate(config)
    assert set(summary["methods"]) == {"eager-adapt"}
    assert len(records(config, "eager-init")) == N_PROBLEMS
    assert not (Path(config.out_dir) / "parallel.jsonl").exists()


# -- answers: extraction mode, answer source, Cons@k ----------------------------------------


class DigitTokenizer(MockTokenizer):
    """The mock's tokens written as digits, spaces and letters, so the lenient fallbacks find numbers."""

    ALPHABET = "0123456789 abq"

    def decode(self, token_ids):
        return "".join("</think>" if t == THINK_END_ID else self.ALPHABET[(t - FIRST_TEXT_ID) % len(self.ALPHABET)] for t in token_ids)


def digit_backend() -> MockBackend:
    backend = MockBackend()
    backend.tokenizer = DigitTokenizer(backend.vocab_size)
    return backend


def sources(config: EvalConfig, method: str) -> set[str]:
    return {s["answer_source"] for row in records(config, method) for s in row["sequences"]}


def test_records_carry_the_answer_source_and_the_summary_states_the_boxed_default(tmp_path, dataset):
    config = make_config(tmp_path, dataset, methods="parallel,eager-init")
    summary = run_eval(config, backend=digit_backend(), verifier=contains_q)
    out = Path(config.out_dir)
    assert sources(config, "parallel") == sources(config, "eager-init") == {"none"}  # digits, but no box
    assert all(s["answer"] is None for row in records(config, "parallel") for s in row["sequences"])
    assert json.loads((out / "config.json").read_text())["extract"] == "boxed"
    assert summary["extract"] == "boxed"
    markdown = (out / "summary.md").read_text()
    assert "extract = boxed" in markdown and "Cons@k exact" in markdown
    assert all({"cons_at_k", "cons_at_k_exact"} <= set(row) for row in summary["methods"].values())


def test_lenient_extraction_records_fallback_answers_and_says_so(tmp_path, dataset):
    config = make_config(tmp_path, dataset, methods="parallel,eager", extract="lenient")
    summary = run_eval(config, backend=digit_backend(), verifier=contains_q)
    for method in ("parallel", "eager"):
        assert "fallback" in sources(config, method) and sources(config, method) <= {"fallback", "none"}
        for row in records(config, method):
            assert all((s["answer"] is None) == (s["answer_source"] == "none") for s in row["sequences"])
    assert summary["extract"] == "lenient"
    assert "extract = lenient" in (Path(config.out_dir) / "summary.md").read_text()


def test_the_gold_answer_verifier_grades_under_the_runs_extraction_mode(tmp_path):
    dataset = tmp_path / "digits.jsonl"
    # every mock output ends in some digit; gold "7" is found by the last-number fallback only
    dataset.write_text("".join(json.dumps({"id": f"p{i}", "question": f"q{i}", "answer": str(d)}) + "\n" for i, d in enumerate(range(10))))
    solved = {}
    for mode in ("boxed", "lenient"):
        config = make_config(tmp_path, dataset, out=mode, methods="parallel", extract=mode)
        summary = run_eval(config, backend=digit_backend())
        solved[mode] = summary["methods"]["parallel"]["pass_at_k"]
        for row in records(config, "parallel"):
            for s in row["sequences"]:
                assert s["correct"] == (s["answer_source"] == "fallback" and s["answer"] == row["gold"])
    assert solved["boxed"] == 0.0 < solved["lenient"]


def test_a_directory_from_before_extraction_modes_resumes_only_under_lenient(tmp_path, dataset):
    evaluate(make_config(tmp_path, dataset, methods="parallel", extract="lenient"))
    out = tmp_path / "out"
    stored = json.loads((out / "config.json").read_text())
    del stored["extract"]  # what eager wrote before the option existed
    (out / "config.json").write_text(json.dumps(stored))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(EagerError) as error:
        evaluate(make_config(tmp_path, dataset, methods="parallel"))
    message = str(error.value)
    assert 'different configuration: extract ("lenient" -> "boxed"' in message
    assert "written before the extract option existed" in message and "\n" not in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    summary = run_eval(make_config(tmp_path, dataset, methods="parallel", extract="lenient"), backend=None, verifier=contains_q)
    assert summary["extract"] == "lenient"  # resumed (nothing was left to generate: no model loaded)
    assert (out / "parallel.jsonl").read_bytes() == before["parallel.jsonl"]


def test_cli_resuming_an_old_directory_under_the_default_is_one_line(tmp_path, dataset, capsys):
    evaluate(make_config(tmp_path, dataset, methods="parallel", extract="lenient"))
    out = tmp_path / "out"
    stored = json.loads((out / "config.json").read_text())
    del stored["extract"]
    (out / "config.json").write_text(json.dumps(stored))
    err = cli_error(capsys, "--dataset", str(dataset), "--methods", "parallel", "--out", str(out))
    assert "extract" in err and "lenient" in err


# -- reallocation ---------------------------------------------------------------------------


def extra_sequences(row: dict) -> int:
    return sum(1 for s in row["sequences"] if s["round"] > 0)


def test_eager_and_eager_adapt_start_from_the_very_eager_init_trees(tmp_path, dataset):
    config = make_config(tmp_path, dataset)
    evaluate(config)
    init = by_id(records(config, "eager-init"))
    for method in ("eager-adapt", "eager"):
        for row in records(config, method):
            first = [s for s in row["sequences"] if s["round"] == 0]
            assert first == init[row["id"]]["sequences"]
            assert row["sequences"][: len(first)] == first


def test_eager_adapt_gives_the_saved_budget_to_prompts_at_the_cap_up_to_3M_each(tmp_path, dataset):
    config = make_config(tmp_path, dataset, methods="eager-adapt")
    evaluate(config)
    M, ids = 4, problem_order(config)
    init = by_id(records(config, "eager-init"))
    adapt = by_id(records(config, "eager-adapt"))
    counts = [len(init[i]["sequences"]) for i in ids]
    saved = M * len(ids) - sum(counts)
    extra = {i: extra_sequences(adapt[i]) for i in ids}
    assert saved > 0 and any(extra.values()), "the mock setup must exercise reallocation"
    assert all(counts[k] == M for k, i in enumerate(ids) if extra[i])  # only capped prompts are hard
    assert all(0 <= e <= 3 * M for e in extra.values())
    assert sum(extra.values()) <= saved
    assert sum(len(adapt[i]["sequences"]) for i in ids) <= M * len(ids)
    assert extra == {i: adapt_plan(counts, M).get(k, 0) for k, i in enumerate(ids)}
    assert all(adapt[i]["extra"] == extra[i] for i in ids)
    for i in ids:
        row = adapt[i]
        assert row["generated_tokens"] >= init[i]["generated_tokens"]
        assert row["rounds"] == len({s["round"] for s in row["sequences"] if s["round"] > 0})
        for position, s in enumerate(row["sequences"]):
            if s["parent"] is not None:  # parents are positions in the merged list, within the same tree
                assert s["parent"] < position and row["sequences"][s["parent"]]["round"] == s["round"]


def test_full_eager_gives_extra_sequences_only_to_unsolved_prompts_up_to_M_each(tmp_path, dataset):
    config = make_config(tmp_path, dataset, methods="eager")
    evaluate(config, verifier=contains_q)
    M, ids = 4, problem_order(config)
    init = by_id(records(config, "eager-init"))
    full = by_id(records(config, "eager"))
    counts = [len(init[i]["sequences"]) for i in ids]
    solved = [any("q" in s["text"] for s in init[i]["sequences"]) for i in ids]
    extra = {i: extra_sequences(full[i]) for i in ids}
    assert any(solved) and not all(solved), "the fake verifier must leave some prompts unsolved"
    assert any(extra.values())
    assert all(extra[i] == 0 for k, i in enumerate(ids) if solved[k])
    assert all(e <= M for e in extra.values())
    assert sum(extra.values()) <= M * len(ids) - sum(counts)
    assert extra == {i: full_plan(counts, solved, M).get(k, 0) for k, i in enumerate(ids)}


def test_extra_trees_lower_theta_per_retry_below_the_cap_and_ask_for_the_remaining_budget(tmp_path, dataset):
    config = make_config(tmp_path, dataset, methods="eager")
    evaluate(config, verifier=never)  # every prompt is hard
    init = by_id(records(config, "eager-init"))
    journal = lines(Path(config.out_dir) / ".extra-eager.jsonl")
    assert max(e["attempt"] for e in journal) >= 1, "the mock setup must need a retry"
    for row in records(config, "eager"):
        trees = sorted((e for e in journal if e["id"] == row["id"]), key=lambda e: e["attempt"])
        assert [e["attempt"] for e in trees] == list(range(len(trees)))
        at_cap = len(init[row["id"]]["sequences"]) >= 4
        remaining = row["extra"]
        for tree in trees:
            assert tree["theta"] == pytest.approx(retry_theta(2.98, tree["attempt"], at_cap=at_cap))
            assert tree["max_sequences"] == remaining
            assert 1 <= len(tree["sequences"]) <= remaining
            remaining -= len(tree["sequences"])
        assert remaining == 0


def test_all_hard_prompts_of_a_round_go_to_the_engine_together(tmp_path, dataset):
    config = make_config(tmp_path, dataset)
    events: list[Progress] = []
    evaluate(config, on_progress=events.append)
    out = Path(config.out_dir)
    journal = lines(out / ".extra-eager.jsonl") + lines(out / ".extra-eager-adapt.jsonl")
    totals = {e.phase: e.trees_total for e in events}
    assert totals["trees"] == 2 * N_PROBLEMS  # parallel and eager-init trees share one engine run
    rounds = max(e["attempt"] for e in journal) + 1
    for attempt in range(rounds):
        assert totals[f"extra round {attempt + 1}"] == sum(1 for e in journal if e["attempt"] == attempt)
    assert f"extra round {rounds + 1}" not in totals


def test_a_failing_verifier_counts_sequences_as_wrong_without_stopping_the_run(tmp_path, dataset):
    def broken(problem, text):
        raise ValueError("reward server down")

    config = make_config(tmp_path, dataset, methods="eager")
    summary = evaluate(config, verifier=broken)
    assert summary["methods"]["eager"]["n_prompts"] == N_PROBLEMS
    assert not any(s["correct"] for row in records(config, "eager") for s in row["sequences"])


# -- reproducibility and resuming -------------------------------------------------------------


def test_the_same_seed_and_config_give_identical_records(tmp_path, dataset):
    first = make_config(tmp_path, dataset, out="a")
    second = make_config(tmp_path, dataset, out="b")
    other_seed = make_config(tmp_path, dataset, out="c", seed=1)
    for config in (first, second, other_seed):
        evaluate(config)
    for method in METHODS:
        assert without_timing(records(first, method)) == without_timing(records(second, method))
    assert without_timing(records(first, "parallel")) != without_timing(records(other_seed, "parallel"))


def crash_when(condition):
    def on_progress(progress: Progress) -> None:
        if condition(progress):
            raise KeyboardInterrupt

    return on_progress


@pytest.mark.parametrize(
    "condition",
    [
        lambda p: p.records_written >= 3,
        lambda p: p.phase == "extra round 1" and p.trees_done >= 2,
        lambda p: p.phase == "extra round 2",
    ],
    ids=["during-trees", "mid-round-1", "start-of-round-2"],
)
def test_a_run_killed_at_any_point_resumes_to_the_records_of_an_uninterrupted_run(tmp_path, dataset, condition):
    reference = make_config(tmp_path, dataset, out="reference")
    evaluate(reference)
    config = make_config(tmp_path, dataset, out="crashed")
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, on_progress=crash_when(condition))
    out = Path(config.out_dir)
    with open(out / "eager-init.jsonl", "a") as f:  # a write cut short by kill -9
        f.write('{"id": "p7", "question": "q')
    evaluate(config)
    for method in METHODS:
        rows = records(config, method)
        assert sorted(Counter(r["id"] for r in rows).values()) == [1] * N_PROBLEMS
        assert without_timing(rows) == without_timing(records(reference, method))
    for method in ("eager-adapt", "eager"):
        journal = lines(out / f".extra-{method}.jsonl")
        assert len({(e["id"], e["attempt"]) for e in journal}) == len(journal)


def test_a_finished_run_is_not_generated_again(tmp_path, dataset):
    config = make_config(tmp_path, dataset)
    evaluate(config)
    before = {m: records(config, m) for m in METHODS}
    summary = run_eval(config, backend=None, verifier=contains_q)  # model "mock" cannot load: nothing is left to generate
    assert {m: records(config, m) for m in METHODS} == before
    assert summary["methods"]["eager"]["n_prompts"] == N_PROBLEMS


def test_a_truncated_last_line_is_dropped_and_its_prompt_generated_again(tmp_path, dataset):
    config = make_config(tmp_path, dataset, methods="parallel")
    evaluate(config)
    path = Path(config.out_dir) / "parallel.jsonl"
    original = path.read_text()
    path.write_text(original[: original.rstrip("\n").rfind("\n") + 40])  # half of the last record
    assert len(write_report(config.out_dir)["methods"]) == 1  # the report reads around it
    evaluate(config)
    assert without_timing(lines(path)) == without_timing([json.loads(line) for line in original.splitlines()])


def test_a_different_configuration_in_the_same_dir_is_refused_naming_the_keys(tmp_path, dataset):
    evaluate(make_config(tmp_path, dataset, methods="parallel"))
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(EagerError) as error:
        evaluate(make_config(tmp_path, dataset, methods="parallel", seed=3, theta=2.5))
    message = str(error.value)
    assert "seed" in message and "theta" in message and "\n" not in message
    assert "max_tokens" not in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_method_can_be_added_to_an_existing_dir(tmp_path, dataset):
    evaluate(make_config(tmp_path, dataset, methods="parallel"))
    out = tmp_path / "out"
    parallel = (out / "parallel.jsonl").read_bytes()
    summary = evaluate(make_config(tmp_path, dataset, methods="eager-init"))
    assert (out / "parallel.jsonl").read_bytes() == parallel
    assert set(summary["methods"]) == {"parallel", "eager-init"}
    assert json.loads((out / "config.json").read_text())["methods"] == ["parallel", "eager-init"]


# -- configuration and CLI errors ---------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"methods": "parallel,eagr"}, ["eagr", "parallel, eager-init, eager-adapt, eager"]),
        ({"M": (4, 0)}, ["M"]),
        ({"retry_decay": 1.5}, ["retry_decay"]),
        ({"template": "no placeholder"}, ["{question}"]),
        ({"max_tokens": 5000, "ctx": 4096}, ["max_tokens"]),
    ],
)
def test_eval_config_rejects_bad_values_with_one_line(tmp_path, dataset, overrides, words):
    with pytest.raises(EagerError) as error:
        make_config(tmp_path, dataset, **overrides)
    assert all(word in str(error.value) for word in words) and "\n" not in str(error.value)


def cli_error(capsys, *argv) -> str:
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eager: error: ") and err.count("\n") == 1
    return err


def test_cli_unknown_dataset_lists_the_available_ones(tmp_path, capsys):
    err = cli_error(capsys, "--dataset", "gsm9k", "--out", str(tmp_path / "out"))
    assert "'gsm9k'" in err and "gsm8k, math500, math" in err


def test_cli_typo_in_methods_lists_the_valid_ones(tmp_path, capsys):
    err = cli_error(capsys, "--dataset", "gsm8k", "--methods", "parallel,eager-adapd", "--out", str(tmp_path / "out"))
    assert "'eager-adapd'" in err and "parallel, eager-init, eager-adapt, eager" in err
    assert not (tmp_path / "out").exists()


def test_cli_bad_budget_list_is_refused(tmp_path, capsys):
    err = cli_error(capsys, "--dataset", "gsm8k", "-M", "4,eight", "--out", str(tmp_path / "out"))
    assert "4,8,16" in err


def test_cli_unwritable_out_dir_fails_before_the_model_loads(tmp_path, capsys, dataset):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    err = cli_error(capsys, "--dataset", str(dataset), "--model", "no-such-model", "--out", str(blocker / "out"))
    assert "cannot write to output directory" in err and "no-such-model" not in err
    assert blocker.read_text() == "keep me"


def test_cli_jsonl_with_a_missing_field_names_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
    err = cli_error(capsys, "--dataset", str(path), "--model", "no-such-model", "--out", str(tmp_path / "out"))
    assert f"{path}:2" in err and "'answer'" in err


def test_cli_report_rerenders_the_summary_files(tmp_path, dataset, capsys):
    config = make_config(tmp_path, dataset, methods="parallel,eager-init")
    evaluate(config)
    out = Path(config.out_dir)
    expected = (out / "summary.json").read_text()
    for name in ("summary.json", "summary.md", "tradeoff.png"):
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "summary.json").read_text() == expected
    assert "| eager-init | 4 |" in capsys.readouterr().out
    assert (out / "tradeoff.png").is_file()
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no config.json" in capsys.readouterr().err


# -- end to end on a real model -------------------------------------------------------------


def test_cli_eval_end_to_end_on_smollm2(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "eval", "--model", "smollm2-135m", "--dataset", "gsm8k", "--limit", "3",
        "--methods", "parallel,eager-init,eager-adapt,eager", "-M", "2", "--max-tokens", "24", "--ctx", "2048",
        "--out", str(out),
    ]
    assert main(argv) == 0
    assert "| parallel | 2 |" in capsys.readouterr().out
    for method in METHODS:
        rows = lines(out / f"{method}.jsonl")
        assert len(rows) == 3 and len({r["id"] for r in rows}) == 3
        assert all(1 <= len(r["sequences"]) for r in rows)
    assert all(len(r["sequences"]) == 2 for r in lines(out / "parallel.jsonl"))
    summary = json.loads((out / "summary.json").read_text())
    assert {"model", "dataset", "n_prompts", "seed", "config", "methods"} <= set(summary)
    assert (summary["model"], summary["dataset"], summary["n_prompts"]) == ("smollm2-135m", "gsm8k", 3)
    assert set(summary["methods"]) == set(METHODS)
    assert all(summary["methods"][m]["generated_tokens"] > 0 for m in METHODS)
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| eager |" in (out / "summary.md").read_text()
    # the same command again finds everything done
    assert main(argv) == 0
    assert all(len(lines(out / f"{m}.jsonl")) == 3 for m in METHODS)
