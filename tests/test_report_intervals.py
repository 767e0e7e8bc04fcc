"""Reports with error bars: bootstrap intervals over prompts, paired differences from
parallel, k in every header, the run's elapsed time, why nothing was reallocated, and
the environment a run records without refusing a resume on another machine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eager.eval.metrics import (
    PromptScore,
    bootstrap_indices,
    bootstrap_interval,
    paired_differences,
    prompt_intervals,
    unpaired_difference_interval,
)
from test_evaluate import crash_when, evaluate, make_config


def score(index: int, solved: bool, rate: float | None = None) -> PromptScore:
    rate = float(solved) if rate is None else rate
    return PromptScore(
        id=f"p{index:03d}", n_sequences=8, n_correct=round(8 * rate), pass_at_any=float(solved), pass_rate=rate,
        cons=float(solved), cons_exact=float(solved), generated_tokens=10, sequence_tokens=10, forks=0, wall_s=1.0,
    )


def coin_flips(n: int, p: float, seed: int) -> list[bool]:
    return list(np.random.default_rng(seed).random(n) < p)


# -- the bootstrap --------------------------------------------------------------------------


def test_bootstrap_intervals_are_reproducible_and_contain_the_point_estimate():
    scores = [score(i, solved, rate=(i % 5) / 4 if solved else 0.0) for i, solved in enumerate(coin_flips(30, 0.4, seed=1))]
    first, again = prompt_intervals(scores), prompt_intervals(list(reversed(scores)))
    assert first == again  # seeded, and in id order whatever the order records were written in
    for key, field in (("pass_at_k", "pass_at_any"), ("pass_rate", "pass_rate"), ("cons_at_k", "cons")):
        mean = np.mean([getattr(s, field) for s in scores])
        low, high = first[key]
        assert low <= mean <= high and low < high


def test_all_prompts_solved_gives_the_interval_one_to_one():
    intervals = prompt_intervals([score(i, True) for i in range(20)])
    assert intervals["pass_at_k"] == [1.0, 1.0] and intervals["pass_rate"] == [1.0, 1.0]


def test_a_95_percent_interval_of_a_coin_covers_the_textbook_width():
    values = [1.0] * 50 + [0.0] * 50  # mean 0.5, standard error 0.05: about 0.5 +- 0.098
    low, high = bootstrap_interval(values, bootstrap_indices(len(values)))
    assert low == pytest.approx(0.40, abs=0.02) and high == pytest.approx(0.60, abs=0.02)


def test_the_paired_difference_interval_is_narrower_than_the_unpaired_one_on_correlated_data():
    baseline_solved = coin_flips(60, 0.5, seed=2)
    flips = coin_flips(60, 0.1, seed=3)  # the method agrees with the baseline on about 90% of prompts
    method_solved = [b != f for b, f in zip(baseline_solved, flips)]
    baseline = [score(i, s) for i, s in enumerate(baseline_solved)]
    method = [score(i, s) for i, s in enumerate(method_solved)]
    paired = paired_differences(method, baseline)["pass_at_k"]
    unpaired = unpaired_difference_interval([float(s) for s in method_solved], [float(s) for s in baseline_solved])
    assert paired["ci95"][0] <= paired["difference"] <= paired["ci95"][1]
    assert paired["ci95"][1] - paired["ci95"][0] < 0.6 * (unpaired[1] - unpaired[0])


def test_paired_differences_use_only_the_prompts_both_methods_have():
    method = [score(i, True) for i in range(10)]
    baseline = [score(i, False) for i in range(5, 15)]
    differences = paired_differences(method, baseline)
    assert differences["n_prompts"] == 5
    assert differences["pass_at_k"] == {"difference": 1.0, "ci95": [1.0, 1.0]}
    assert paired_differences(method, [score(99, True)]) is None


# -- summary.json and summary.md of a run ---------------------------------------------------


def test_summary_md_states_pass_at_8_for_M_8_with_intervals(tmp_path, dataset):
    summary = evaluate(make_config(tmp_path, dataset, methods="parallel", M=(8,)))
    markdown = (Path(tmp_path / "out") / "summary.md").read_text()
    assert "| method | M | Pass@8 | pass rate | Cons@8 | Cons@8 exact |" in markdown
    assert "Pass@8: a prompt is solved if any of its 8 sequences is correct" in markdown
    row = summary["methods"]["parallel"]
    low, high = row["intervals"]["pass_at_k"]
    assert low <= row["pass_at_k"] <= high
    assert f"| parallel | 8 | {row['pass_at_k']:.3f} [{low:.3f}, {high:.3f}] |" in markdown
    assert "engine time share s |" in markdown and "wall-clock" not in markdown
    assert summary["intervals"]["resamples"] == 2000 and summary["intervals"]["level"] == 0.95


def test_varying_sequence_counts_say_what_k_is_and_each_method_is_compared_with_parallel(tmp_path, dataset):
    summary = evaluate(make_config(tmp_path, dataset))
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert "| k = sequences per prompt | Pass@k (k = sequences of the prompt) |" in markdown
    assert "| parallel | 4 | 4 |" in markdown  # parallel's k is M
    assert "vs_parallel" not in summary["methods"]["parallel"]
    for method in ("eager-init", "eager-adapt", "eager"):
        differences = summary["methods"][method]["vs_parallel"]
        assert differences["n_prompts"] == 8
        low, high = differences["pass_at_k"]["ci95"]
        assert low <= differences["pass_at_k"]["difference"] <= high
        assert f"| {method} | 4 | 8 | {differences['pass_at_k']['difference']:+.3f} [{low:+.3f}, {high:+.3f}] |" in markdown
    assert "Difference from parallel at the same M" in markdown


def test_the_report_says_when_every_tree_reached_M_so_nothing_was_reallocated(tmp_path, dataset):
    summary = evaluate(make_config(tmp_path, dataset, theta=0.0, M=(2,)))  # forks at once: every tree reaches M
    assert summary["reallocation"]["M=2"]["saved"] == 0
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert ("R = 0: no budget to move, because every eager-init tree reached M = 2 sequences; "
            "eager-adapt and eager equal eager-init.") in markdown


def test_the_report_says_when_full_eager_had_no_unsolved_prompt_to_give_the_budget_to(tmp_path, dataset):
    summary = evaluate(make_config(tmp_path, dataset), verifier=lambda problem, text: True)
    moved = summary["reallocation"]["M=4"]
    assert moved["saved"] > 0 and moved["eager"] == {"extra_sequences": 0, "hard_prompts": 0, "cap_per_prompt": 4}
    assert moved["eager-adapt"]["extra_sequences"] > 0
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert "eager moved nothing: there are no prompts eager-init did not solve, so it equals eager-init." in markdown
    assert f"eager-adapt gave {moved['eager-adapt']['extra_sequences']} extra sequences to" in markdown


def test_the_run_elapsed_time_is_recorded_per_session_and_reported(tmp_path, dataset):
    config = make_config(tmp_path, dataset, methods="parallel")
    summary = evaluate(config)
    sessions = [json.loads(line) for line in (tmp_path / "out" / "sessions.jsonl").read_text().splitlines()]
    assert len(sessions) == 1 and sessions[0]["interrupted"] is False and sessions[0]["started_utc"].endswith("Z")
    assert summary["run"]["elapsed_s"] == pytest.approx(sessions[0]["elapsed_s"]) and summary["run"]["sessions"] == 1
    assert "Run elapsed time: " in (tmp_path / "out" / "summary.md").read_text()
    evaluate(config)  # nothing left to generate: no new session
    assert len((tmp_path / "out" / "sessions.jsonl").read_text().splitlines()) == 1


def test_an_interrupted_and_resumed_run_adds_up_its_sessions(tmp_path, dataset):
    config = make_config(tmp_path, dataset)
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, on_progress=crash_when(lambda p: p.records_written >= 3))
    summary = evaluate(config)
    sessions = [json.loads(line) for line in (tmp_path / "out" / "sessions.jsonl").read_text().splitlines()]
    assert [s["interrupted"] for s in sessions] == [True, False]
    assert summary["run"]["sessions"] == 2 and summary["run"]["interrupted_sessions"] == 1
    assert summary["run"]["elapsed_s"] == pytest.approx(sum(s["elapsed_s"] for s in sessions))
    assert "(2 sessions, 1 interrupted; started " in (tmp_path / "out" / "summary.md").read_text()


def test_config_json_records_the_environment_and_a_resume_elsewhere_is_not_refused(tmp_path, dataset):
    config = make_config(tmp_path, dataset, methods="parallel", ctx=2048, threads=1)
    evaluate(config)
    path = tmp_path / "out" / "config.json"
    stored = json.loads(path.read_text())
    environment = stored["environment"]
    assert set(environment["versions"]) == {"eager", "llama-cpp-python", "numpy", "math-verify"}
    assert environment["versions"]["numpy"] == np.__version__
    assert environment["engine"]["ctx"] == 2048 and environment["engine"]["threads"] == 1
    assert environment["host_cpus"] >= 1 and environment["written_utc"].endswith("Z")
    assert environment["model_sha256"] is None  # the mock has no GGUF file
    stored["environment"] = {"versions": {"eager": "0.0.1"}, "host_cpus": 512}  # another machine, another version
    path.write_text(json.dumps(stored))
    evaluate(make_config(tmp_path, dataset, methods="parallel,eager-init", ctx=2048, threads=1))  # not refused


def test_config_json_records_a_packaged_models_sha256():
    from eager.eval.config import model_sha256
    from eager.models import MODELS

    assert model_sha256("smollm2-135m") == MODELS["smollm2-135m"].sha256
    assert model_sha256("openai:http://127.0.0.1:1/v1") is None and model_sha256("mock") is None
