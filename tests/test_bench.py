"""`eager bench`: the quick run on SmolLM2 reports every key as a finite number."""

from __future__ import annotations

import argparse
import json
import math
from types import SimpleNamespace

import pytest

from eager.bench import HEADLINE_KEYS, BenchConfig, StepClock, greedy_agreement, measure_transformers
from eager.bench.kv import cells_in_budget
from eager.core.results import StepStats
from eager.cli.bench import add_parser
from eager import models
from eager.errors import EagerError

OCCUPANCY_KEYS = {"prompts_in_flight_max", "prompts_in_flight_mean", "preemptions"}
SCALING_KEYS = {"prompts", "sequences", "tokens", "seconds", "tokens_per_s", "kv_cells", "kv_mib"} | OCCUPANCY_KEYS
KV_KEYS = {"ctx", "kv_bytes_per_cell", "kv_mib", "tokens", "seconds", "tokens_per_s", "greedy_agreement", "entropy_mad"} | OCCUPANCY_KEYS


def bench_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="eager")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_quick_bench_writes_every_key_as_a_finite_number(tmp_path, capsys):
    out = tmp_path / "bench.json"
    # one thread: on a shared 2-core machine two llama.cpp threads stall each other badly
    args = bench_args(
        "--quick", "--model", "smollm2-135m", "--threads", "1", "--out", str(out), "--plot", str(tmp_path / "bench.png"), "--no-transformers"
    )
    assert args.func(args) == 0
    data = json.loads(out.read_text())
    for key in HEADLINE_KEYS:
        assert is_finite_number(data.get(key)), key
    assert {"engine_vs_raw", "entropy_overhead", "token_ratio", "wall_ratio", "fork_ms", "step_ms", "prefill_ms", "kv_cells", "sum_seq_len"} <= set(HEADLINE_KEYS)
    assert data["vs_transformers"] is None and data["transformers_message"].startswith("skipped")
    assert [row["prompts"] for row in data["scaling"]] == [1, 2, 4]
    for row in data["scaling"]:
        assert set(row) >= SCALING_KEYS and all(is_finite_number(row[k]) for k in SCALING_KEYS)
    for section in ("engine_vs_raw_detail", "entropy_detail", "eager_detail", "fork_detail", "kv_fill", "kv_detail", "targets"):
        assert section in data
    for method in ("parallel", "eager_init"):
        run = data["eager_detail"][method]
        assert all(is_finite_number(run[k]) for k in OCCUPANCY_KEYS), method
        assert 1 <= run["prompts_in_flight_mean"] <= run["prompts_in_flight_max"] <= data["eager_detail"]["problems"]
    assert [(row["kv_type"], row["flash_attn"]) for row in data["kv"]] == [("f16", "on"), ("f16", "off"), ("q8_0", "on")]
    for row in data["kv"]:
        assert set(row) >= KV_KEYS and all(is_finite_number(row[k]) for k in KV_KEYS), row
    f16, _, q8 = data["kv"]
    # the same memory holds about twice the q8_0 cells; the reference agrees with itself
    assert q8["kv_mib"] <= f16["kv_mib"] and q8["ctx"] >= 1.8 * f16["ctx"]
    assert (f16["greedy_agreement"], f16["entropy_mad"]) == (1.0, 0.0)
    assert all(is_finite_number(v) for k, v in data["entropy_detail"].items() if k != "ms_over_repeats")
    # deterministic, not a timing: the forked prefix is stored once, so the fill check fits
    assert data["kv_fill"]["fits_required"] and data["kv_fill"]["cells_when_full"] <= data["kv_fill"]["n_ctx"]
    assert (tmp_path / "bench.md").read_text().startswith("# eager bench")
    assert (tmp_path / "bench.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "engine_vs_raw" in printed and "prompts in flight (max / mean)" in printed and "| q8_0 | on |" in printed
    # theta auto, as generate and eval: SmolLM2's shipped value, and the output says so
    assert (data["theta_source"], data["eager_detail"]["theta_source"]) == ("shipped", "shipped")
    assert data["eager_detail"]["theta"] == pytest.approx(models.MODELS["smollm2-135m"].theta)
    # every timing repeated: min <= median <= max over n repeats, the headline the fastest
    spreads = [data["engine_vs_raw_detail"]["engine_tokens_per_s_runs"], data["fork_detail"]["ms_over_repeats"]["fork"],
               *data["entropy_detail"]["ms_over_repeats"].values(), data["eager_detail"]["eager_init"]["wall_s_runs"],
               *(row["seconds_runs"] for row in data["scaling"] + data["kv"])]
    assert all(s["n"] >= 2 and s["min"] <= s["median"] <= s["max"] for s in spreads)
    assert data["eager_detail"]["parallel"]["wall_s"] <= data["eager_detail"]["parallel"]["wall_s_runs"]["min"] + 1e-9
    assert "| timing | min | median | max | repeats |" in printed and "| EAGER-init on GSM8K, wall s |" in printed


def test_prompts_in_flight_at_a_step_count_the_prompts_it_finished():
    clock = StepClock()
    for in_flight, done, preempted in [(2, 0, 0), (1, 1, 1), (0, 2, 1)]:
        clock(StepStats(steps=0, prompts_done=done, prompts_in_flight=in_flight, live_branches=0, generated_tokens=0, elapsed_s=0.0, preemptions=preempted))
    assert clock.occupancy() == {"prompts_in_flight_max": 2, "prompts_in_flight_mean": pytest.approx(5 / 3), "preemptions": 1}


def greedy_result(token_ids, entropies):
    return SimpleNamespace(sequences=[SimpleNamespace(token_ids=token_ids, entropies=entropies)])


def test_greedy_agreement_is_the_shared_prefix_and_the_entropy_gap_where_both_saw_the_same_tokens():
    reference = [greedy_result([1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5]), greedy_result([7], [1.0])]
    other = [greedy_result([1, 2, 9, 9], [0.5, 0.7, 0.1, 3.0]), greedy_result([7], [1.0])]
    # 2 of 4 tokens, then all of 1; entropies compared up to the first difference, included: 0, 0.2, 0.4 and 0
    assert greedy_agreement(reference, other) == {"greedy_agreement": 0.75, "entropy_mad": pytest.approx(0.15)}


def test_q8_0_gets_the_cells_that_fit_in_the_memory_of_the_f16_cells():
    assert cells_in_budget(8192, "f16") == 8192
    cells = cells_in_budget(8192, "q8_0")
    assert cells % 256 == 0 and 8192 * 64 - 256 * 34 < cells * 34 <= 8192 * 64


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--out", "x.txt"], "--out must name a .json file"),
        (["--out", "/nonexistent/dir/b.json"], "no such directory"),
        (["--out", "{tmp}/b.json", "-M", "1"], "bench needs M >= 2"),
        (["--out", "{tmp}/b.json", "--threads", "0"], "^threads must be >= 1"),
        (["--out", "{tmp}/b.json", "--model", "gpt-9"], "unknown model 'gpt-9'"),
        (["--out", "{tmp}/b.json", "--model", "{tmp}/none.gguf"], "none.gguf"),
    ],
)
def test_bad_bench_input_is_one_clear_error(argv, message, tmp_path):
    args = bench_args(*(a.format(tmp=tmp_path) for a in argv))
    with pytest.raises(EagerError, match=message):
        args.func(args)


def test_bench_theta_is_auto_by_default_and_takes_a_number_or_auto_only(capsys):
    assert bench_args("--out", "b.json").theta == "auto" and BenchConfig().theta == "auto"
    assert bench_args("--out", "b.json", "--theta", "1.5").theta == 1.5
    with pytest.raises(SystemExit):
        bench_args("--out", "b.json", "--theta", "high")
    assert "expected a number of nats or auto" in capsys.readouterr().err
    with pytest.raises(EagerError, match="theta must be a number of nats or 'auto'"):
        BenchConfig(theta="high")


def test_without_transformers_the_peer_is_skipped_with_a_message(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kw):
        if name in ("torch", "transformers") or name.startswith(("torch.", "transformers.")):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    got = measure_transformers(tmp_path / "m.gguf", [1, 2, 3], BenchConfig(quick=True), 100.0)
    assert got == {"vs_transformers": None, "transformers_message": got["transformers_message"]}
    assert got["transformers_message"].startswith("skipped: transformers not installed")


@pytest.mark.slow
def test_quick_bench_runs_the_transformers_peer_when_it_is_installed(tmp_path):
    import importlib.util

    out = tmp_path / "bench.json"
    args = bench_args("--quick", "--threads", "1", "--out", str(out))
    assert args.func(args) == 0
    data = json.loads(out.read_text())
    if importlib.util.find_spec("transformers") is None:
        assert data["vs_transformers"] is None and "not installed" in data["transformers_message"]
    else:
        assert is_finite_number(data["vs_transformers"]), data["transformers_message"]
        assert is_finite_number(data["transformers_detail"]["tokens_per_s"])
