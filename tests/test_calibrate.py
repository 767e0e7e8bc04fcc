"""`eager calibrate` and `--theta auto`: the search, the choice, the cache, and where every theta comes from."""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import replace

import numpy as np
import pytest

import eager
from eager import api, models
from eager.api import AUTO, resolve_theta
from eager.backends.mock import EOG_ID, FIRST_TEXT_ID, THINK_END_ID, MockBackend
from eager.cli import main
from eager.core.config import BranchingConfig, SamplingConfig
from eager.core.entropy import topk_entropy
from eager.errors import EagerError
from eager.eval.calibrate import CalibrationConfig, Point, Target, calibrate, choose, search, target_of
from eager.eval.config import EvalConfig
from eager.eval.datasets import Problem
from eager.eval.executors import LocalExecutor
from eager.eval.runner import run_eval


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache; the packaged models' GGUFs stay where they are."""
    root = tmp_path / "cache"
    (root).mkdir()
    real_models = models.cache_dir()
    monkeypatch.setenv("EAGER_CACHE", str(root))
    if real_models.is_dir():
        (root / "models").symlink_to(real_models)
    return root


# -- a mock whose entropy distribution is known ------------------------------------------------
#
# Every row ranks the tokens the same way: token FIRST_TEXT_ID first, THINK_END_ID ("</think>")
# second, the other text tokens after, end-of-generation last; logits -beta * rank. Each row's
# beta is one of N_LEVELS values, picked by a hash of the history, so the top-20 entropy of a
# step is uniform over N_LEVELS known values. Greedy sampling keeps the root on the top-1 token;
# a fork gives the child the top-2 token, "</think>", after which it never forks. A tree of L
# tokens therefore has 1 + min(M - 1, #{root steps with H > theta}) sequences (fixed threshold),
# whose mean is E[1 + min(M - 1, Binomial(L, p))], p = P(H > theta): computable exactly.

VOCAB, K, N_LEVELS, L, M = 32, 20, 400, 24, 8


def _rows() -> np.ndarray:
    """N_LEVELS rows whose top-20 entropies are evenly spaced over [0.05, 2.95] nats."""
    order = [FIRST_TEXT_ID, THINK_END_ID] + [t for t in range(VOCAB) if t not in (EOG_ID, FIRST_TEXT_ID, THINK_END_ID)]

    def row(beta: float) -> np.ndarray:
        r = np.full(VOCAB, -60.0, dtype=np.float32)
        r[order] = -beta * np.arange(len(order))
        return r

    betas = np.geomspace(0.02, 20.0, 20000)
    entropies = topk_entropy(np.stack([row(b) for b in betas]), K)  # falls as beta grows
    wanted = np.linspace(0.05, 2.95, N_LEVELS)
    return np.stack([row(betas[np.argmin(np.abs(entropies - h))]) for h in wanted])


ROWS = _rows()
LEVEL_ENTROPIES = topk_entropy(ROWS, K).astype(np.float64)


def known_logits(history: tuple[int, ...]) -> np.ndarray:
    return ROWS[zlib.crc32(np.asarray(history, dtype=np.int64).tobytes()) % N_LEVELS]


def expected_sequences(theta: float) -> float:
    p = float(np.mean(LEVEL_ENTROPIES > theta))
    binomial = [math.comb(L, j) * p**j * (1 - p) ** (L - j) for j in range(L + 1)]
    return 1 + sum(min(M - 1, j) * q for j, q in enumerate(binomial))


def analytic_theta(target: float) -> float:
    """The smallest level entropy at or above which the expected tree has at most ``target`` sequences."""
    levels = np.sort(LEVEL_ENTROPIES)
    return float(next(h for h in levels if expected_sequences(h) <= target))


def problems(n: int, prefix: str = "p") -> list[Problem]:
    return [Problem(f"{prefix}{i}", f"question number {i} of the warm-up", str(i)) for i in range(n)]


def known_calibration(**config):
    executor = LocalExecutor(MockBackend(VOCAB, logits_fn=known_logits, n_ctx=1 << 16, max_sequences=64))
    branching = BranchingConfig(max_sequences=M, dynamic_theta=False, entropy="topk", entropy_top_k=K)
    sampling = SamplingConfig(max_tokens=L, temperature=0.0)
    verify = (lambda problem, text: "</think>" in text) if config.get("labels") else None
    return calibrate(
        executor, problems(48), branching=branching, sampling=sampling, config=CalibrationConfig(**config), template="{question}", verify=verify
    )


def test_the_mock_entropies_are_spread_evenly_over_the_top20_range():
    assert np.allclose(np.sort(LEVEL_ENTROPIES), np.linspace(0.05, 2.95, N_LEVELS), atol=0.01)
    assert np.all(np.argsort(ROWS, axis=1)[:, -2] == THINK_END_ID)  # the top-2 token is "</think>"


@pytest.mark.parametrize("target", [2.5, 4.0, 6.0])
def test_calibrate_lands_within_0_1_nats_of_the_analytic_theta_for_the_target(target):
    result = known_calibration(target_sequences=target)
    expected = analytic_theta(target)
    assert result.reached
    assert abs(result.theta - expected) <= 0.1, (result.theta, expected, [(p.theta, p.mean_sequences) for p in result.points])
    assert abs(result.chosen.mean_sequences - target) <= 0.1 * target
    assert len(result.points) <= CalibrationConfig().max_points


@pytest.mark.parametrize("first", [0.3, 1.5])
def test_the_search_alone_gets_there_from_a_poor_first_guess(first, monkeypatch):
    from eager.eval import calibrate as module

    monkeypatch.setattr(module, "first_guess", lambda *args: first)
    result = known_calibration(target_sequences=4.0)
    assert result.points[0].theta == pytest.approx(first)
    assert result.reached and abs(result.theta - analytic_theta(4.0)) <= 0.1


def test_the_default_target_is_half_of_M():
    result = known_calibration()
    assert result.target.value == M / 2
    assert abs(result.theta - analytic_theta(M / 2)) <= 0.1


def test_a_token_ratio_target_aims_at_generated_tokens_over_M_warmup_chains():
    result = known_calibration(target_token_ratio=0.3)
    assert result.warmup.generated_tokens == 48 * L  # no fork, no end: every chain is L tokens
    assert abs(result.chosen.token_ratio - 0.3) <= 0.1 * 0.3
    assert result.chosen.token_ratio == pytest.approx(result.chosen.generated_tokens / (M * 48 * L))


def test_the_warmup_never_forks_and_records_every_entropy():
    result = known_calibration()
    assert len(result.warmup.entropies) == 48 and all(len(h) == L for h in result.warmup.entropies)
    assert set(np.round(result.warmup.all_entropies(), 5)) <= set(np.round(LEVEL_ENTROPIES, 5))


def test_labels_grade_every_tree_and_choose_among_the_thetas_tried():
    # on the mock only a child holds "</think>" (its fork token): a prompt is solved when its tree forked
    result = known_calibration(labels=True, target_sequences=3.0)
    assert result.warmup.pass_at_1 == 0.0
    assert all(p.pass_at_k == pytest.approx(np.mean([n > 1 for n in p.sequences])) for p in result.points)
    assert "Pass@k per generated token" in result.reason or "no theta tried solved" in result.reason
    with pytest.raises(EagerError, match="labels needs a verifier"):
        calibrate(LocalExecutor(MockBackend(VOCAB)), problems(2), config=CalibrationConfig(labels=True))


# -- the search on a curve with no noise -----------------------------------------------------------


def curve_point(theta: float) -> Point:
    value = 1 + 7 * max(0.0, 1 - theta / 3) ** 2  # falls from 8 at theta 0 to 1 at theta 3
    return Point(theta, value, value / 8, int(100 * value), None, 0.0, (round(value),))


@pytest.mark.parametrize("goal", [1.5, 2.0, 4.0, 7.5])
def test_the_search_brackets_the_target_and_stops_within_tolerance(goal):
    target = Target("mean_sequences", goal, ceiling=8.0, floor=1.0)
    points = search(curve_point, target, first=0.1, highest=3.0, max_points=8, tolerance=0.02)
    assert abs(points[-1].mean_sequences - goal) <= 0.02 * goal
    assert len(points) <= 8


def test_the_search_never_tries_outside_zero_and_the_highest_entropy():
    target = Target("mean_sequences", 7.99, ceiling=8.0, floor=1.0)  # only reached at theta ~ 0
    points = search(curve_point, target, first=5.0, highest=3.0, max_points=6, tolerance=0.001)
    assert all(0 < p.theta < 3.0 for p in points)
    assert points[-1].theta < points[0].theta


def test_labels_choose_the_best_pass_at_k_per_generated_token():
    target = Target("mean_sequences", 4.0, ceiling=8.0, floor=1.0)
    cheap = Point(2.0, 2.0, 0.25, 200, 0.5, 0.0, (2,))  # 0.5 per 100 tokens a prompt
    costly = Point(1.0, 6.0, 0.75, 600, 0.75, 0.0, (6,))  # 0.75 per 600
    on_target = Point(1.5, 4.0, 0.5, 400, 0.5, 0.0, (4,))
    assert choose([cheap, costly, on_target], target, labels=False)[0] is on_target
    assert choose([cheap, costly, on_target], target, labels=True)[0] is cheap
    unsolved = [Point(t, s, 0, 1, 0.0, 0, (1,)) for t, s in ((1.0, 5.0), (2.0, 3.9))]
    best, why = choose(unsolved, target, labels=True)
    assert best.theta == 2.0 and "no theta tried solved" in why


@pytest.mark.parametrize(
    ("config", "M", "message"),
    [
        (dict(target_sequences=3, target_token_ratio=0.5), 8, "not both"),
        (dict(target_sequences=1), 8, "target_sequences must be > 1"),
        (dict(target_sequences=9), 8, "above M = 8"),
        (dict(target_token_ratio=1.5), 8, "target_token_ratio must be in (0, 1]"),
        (dict(), 1, "needs M >= 2"),
    ],
)
def test_impossible_targets_are_one_clear_error(config, M, message):
    with pytest.raises(EagerError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        target_of(CalibrationConfig(**config), M)


# -- theta auto: the cache, then the shipped value, then the paper's 2.2 ---------------------------


def test_auto_prefers_the_cached_calibration_then_the_shipped_value_then_the_default(cache, monkeypatch):
    shipped = models.MODELS["smollm2-135m"].theta
    assert shipped is not None and shipped > 0 and "eager calibrate" in models.MODELS["smollm2-135m"].theta_command
    assert resolve_theta(model="smollm2-135m") == api.ThetaChoice(shipped, "shipped", resolve_theta(model="smollm2-135m").detail)
    models.write_calibration(api.theta_identity("smollm2-135m"), "topk20", {"theta": 1.234})
    choice = resolve_theta(model="smollm2-135m")
    assert (choice.value, choice.source) == (1.234, "calibrated")
    full = resolve_theta(model="smollm2-135m", branching=BranchingConfig(entropy="full"))
    assert full.source == "default" and full.value == BranchingConfig().theta  # a calibration holds for one measure
    remote = resolve_theta(model="openai:http://127.0.0.1:9/v1#somebody")
    assert remote.source == "default" and "eager calibrate --model openai:" in remote.detail
    assert resolve_theta(0.7, model="anything") == api.ThetaChoice(0.7, "given", "given")


def test_a_damaged_cache_file_is_ignored(cache):
    path = models.calibration_file(api.theta_identity("smollm2-135m"), "topk20")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert resolve_theta(model="smollm2-135m").source == "shipped"


def test_generate_uses_auto_unless_theta_is_given_and_a_bare_backend_keeps_the_default(caplog):
    backend = MockBackend(VOCAB, logits_fn=known_logits)
    kw = dict(M=4, max_tokens=L, temperature=0.0, dynamic_theta=False)
    bare = eager.generate(["x"], backend=backend, **kw)[0]
    assert all(f.threshold == BranchingConfig().theta for f in bare.forks)
    shipped = models.MODELS["smollm2-135m"].theta
    named = eager.generate(["x"], backend=backend, model="smollm2-135m", **kw)[0]
    assert named.forks and all(f.threshold == shipped for f in named.forks)
    given = eager.generate(["x"], backend=backend, model="smollm2-135m", theta=0.5, **kw)[0]
    assert all(f.threshold == 0.5 for f in given.forks)


def test_eval_records_the_theta_and_its_source_and_resumes_under_the_same_number(tmp_path, dataset):
    backend = MockBackend(VOCAB, logits_fn=known_logits)
    common = dict(dataset=str(dataset), model="smollm2-135m", methods="eager-init", M=4, max_tokens=12, dynamic_theta=False)
    auto = EvalConfig.of(out_dir=str(tmp_path / "run"), theta=AUTO, limit=4, **common)
    assert (auto.branching.theta, auto.theta_source) == (models.MODELS["smollm2-135m"].theta, "shipped")
    run_eval(auto, backend=backend)
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (stored["theta"], stored["theta_source"]) == (auto.branching.theta, "shipped")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["theta_source"] == "shipped"
    assert f"theta = {auto.branching.theta} (shipped)" in (tmp_path / "run" / "summary.md").read_text()
    # the same number given by hand resumes the run (the source is provenance, not configuration)
    same = EvalConfig.of(out_dir=str(tmp_path / "run"), theta=auto.branching.theta, limit=4, **common)
    assert same.theta_source == "given"
    run_eval(same, backend=backend)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["theta_source"] == "shipped"
    other = EvalConfig.of(out_dir=str(tmp_path / "run"), theta=0.5, limit=4, **common)
    with pytest.raises(EagerError, match="theta"):
        run_eval(other, backend=backend)


# -- the command line on SmolLM2 ------------------------------------------------------------------


def test_cli_calibrate_writes_a_positive_theta_and_theta_auto_then_uses_it(tmp_path, capsys):
    out = tmp_path / "c.json"
    argv = ["calibrate", "--model", "smollm2-135m", "--dataset", "gsm8k", "--limit", "4", "-M", "4", "--max-tokens", "48", "--out", str(out)]
    assert main([*argv, "--threads", "1", "--plot", str(tmp_path / "c.png")]) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["theta"] > 0 and f"theta = {record['theta']:.3f}" in printed and "| theta | mean sequences |" in printed
    assert record["identity"]["gguf_sha256"] == models.MODELS["smollm2-135m"].sha256
    assert record["command"].startswith("eager calibrate ") and "--limit 4" in record["command"] and "--max-tokens 48" in record["command"]
    assert record["M"] == 4 and record["target"] == {"measure": "mean_sequences", "value": 2.0}
    assert len(record["points"]) >= 1 and record["warmup"]["chains"] == 4 and sum(record["warmup"]["entropy"]["counts"]) == 4 * 48
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["generate", "--model", "smollm2-135m", "--prompt", "What is 2 + 3?", "-M", "2", "--max-tokens", "8", "--json"]) == 0
    generated = json.loads(capsys.readouterr().out)
    settings = generated["settings"]
    assert (settings["theta"], settings["theta_source"]) == (pytest.approx(record["theta"], abs=1e-4), "calibrated")
    assert all(f["threshold"] >= settings["theta"] for f in generated["results"][0]["forks"])


def test_cli_theta_accepts_auto_or_a_number_and_nothing_else(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--prompt", "x", "--theta", "high"])
    assert "expected a number of nats or auto" in capsys.readouterr().err


def test_cli_names_the_source_of_theta_and_warns_when_nothing_is_known(tmp_path, capsys):
    gguf = tmp_path / "copy.gguf"
    gguf.write_bytes(b"GGUF not a real model")
    from eager.cli.generate import chosen_theta, print_theta_note
    from eager.cli import build_parser

    args = build_parser().parse_args(["generate", "--prompt", "x", "--model", str(gguf)])
    choice = chosen_theta(args, args.model)
    print_theta_note(choice, to=None)
    err = capsys.readouterr().err
    assert choice.source == "default" and err.startswith("eager: warning: theta 2.2 (default:") and "eager calibrate --model" in err


def test_cli_calibrate_on_a_served_model_records_its_name_and_auto_finds_it(tmp_path, dataset, capsys):
    from scripted_server import PositionScript, ScriptedServer, serving

    with serving(ScriptedServer(PositionScript(), flavour="vllm")) as url:
        model = f"openai:{url}#fake-model"
        out = tmp_path / "c.json"
        argv = ["calibrate", "--model", model, "--dataset", str(dataset), "--raw-prompt", "-M", "4", "--max-tokens", "24", "--out", str(out)]
        assert main(argv) == 0, capsys.readouterr().err
    record = json.loads(out.read_text())
    assert record["identity"] == {"key": "openai:fake-model", "served_model": "fake-model", "url": url}
    assert record["warmup"]["entropy"]["max"] == pytest.approx(1.6, abs=0.05)  # PositionScript: H = 1.60 or 0.22
    choice = resolve_theta(model="openai:http://elsewhere:8000/v1#fake-model")  # the served name is the key
    assert (choice.value, choice.source) == (record["theta"], "calibrated")


@pytest.mark.slow
def test_smollm2_theta_gives_trees_within_30_percent_of_the_target_on_other_prompts(smollm):
    from eager.eval.datasets import format_prompt, load_problems

    pool = load_problems("gsm8k", "train", limit=32)
    warmup, held_out = pool[:16], pool[16:]
    branching = BranchingConfig(max_sequences=4)
    sampling = SamplingConfig(max_tokens=64)
    result = calibrate(LocalExecutor(smollm), warmup, branching=branching, sampling=sampling)
    assert result.reached
    trees = eager.generate(
        [format_prompt(p) for p in held_out], backend=smollm, branching=replace(branching, theta=result.theta), sampling=sampling,
    )
    mean = float(np.mean([len(t.sequences) for t in trees]))
    assert abs(mean - result.target.value) <= 0.3 * result.target.value, (result.theta, mean)


@pytest.mark.slow
def test_the_default_model_branches_on_a_gsm8k_question_with_no_theta_given(capsys):
    prompt = "A baker makes 12 muffins per tray and bakes 7 trays. She sells all but 9 muffins. How many does she sell?"
    assert main(["generate", "--prompt", prompt, "-M", "8", "--max-tokens", "120", "--threads", "1", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["settings"]["theta_source"] == "shipped" and len(payload["results"][0]["sequences"]) > 1


def test_cli_calibrate_labels_on_code_grade_by_running_the_tests(tmp_path, monkeypatch, capsys):
    """--labels on humaneval asks the code verifier (the problem's tests run), not the math grader."""
    from scripted_server import PositionScript, ScriptedServer, serving

    import eager.eval.code as code
    from eager.eval.sandbox import Outcome

    ran = []
    monkeypatch.setattr(code, "run_program", lambda source, limits, how: ran.append(source) or Outcome(True, "passed"))
    with serving(ScriptedServer(PositionScript(), flavour="vllm")) as url:
        out = tmp_path / "c.json"
        argv = ["calibrate", "--model", f"openai:{url}#fake-model", "--dataset", "humaneval", "--split", "test", "--limit", "2",
                "--labels", "--no-cache", "-M", "2", "--max-tokens", "8", "--out", str(out)]
        assert main(argv) == 0, capsys.readouterr().err
    record = json.loads(out.read_text())
    assert ran and all("def check(" in source for source in ran)
    assert {point["pass_at_k"] for point in record["points"]} == {1.0}


def test_the_recorded_command_holds_the_flags_given_and_no_other():
    from eager.cli import build_parser
    from eager.cli.calibrate import command_line

    base = ["calibrate", "--model", "smollm2-135m", "--limit", "4", "-M", "4", "--no-cache"]
    args = build_parser().parse_args(base)
    command = command_line(args)
    assert command.startswith("eager calibrate --model smollm2-135m --dataset gsm8k --split train --limit 4 -M 4 --max-tokens ")
    assert "--no-cache" in command and "--verbose" not in command and "--quiet" not in command
    quiet = command_line(build_parser().parse_args([*base, "-q", "--no-dynamic-theta"]))
    assert quiet.count("--quiet") == 1 and "--verbose" not in quiet and "--no-dynamic-theta" in quiet
