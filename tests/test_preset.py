"""`--preset paper`: the reference implementation's settings in one flag; explicit flags win."""

from __future__ import annotations

import pytest

from eager.cli import build_parser, main
from eager.cli.evaluate import eval_config
from eager.cli.options import config_from_args
from eager.core.config import BranchingConfig, EngineConfig, SamplingConfig
from eager.eval.datasets import DEFAULT_TEMPLATE

EVAL = ["eval", "--dataset", "gsm8k", "--out", "o"]
GENERATE = ["generate", "--prompt", "x"]


def eval_with(*argv: str):
    return eval_config(build_parser().parse_args([*EVAL, *argv]))


def generate_with(*argv: str):
    args = build_parser().parse_args([*GENERATE, *argv])
    return config_from_args(BranchingConfig, args), config_from_args(SamplingConfig, args), config_from_args(EngineConfig, args)


def test_the_paper_preset_lands_in_the_eval_config():
    config = eval_with("--preset", "paper")
    assert config.M == (32,)
    assert (config.sampling.max_tokens, config.sampling.temperature, config.branching.theta) == (32768, 0.6, 2.5)
    assert config.extract == "boxed" and config.template == "{question}"
    assert config.engine.ctx > config.sampling.max_tokens


def test_without_a_preset_eval_keeps_its_defaults():
    config = eval_with()
    assert config.M == (BranchingConfig().max_sequences,) and config.template == DEFAULT_TEMPLATE
    from eager.api import resolve_theta

    assert config.branching.theta == resolve_theta("auto", model=config.model).value and config.sampling == SamplingConfig()


@pytest.mark.parametrize("order", ["flag first", "preset first"])
def test_an_explicit_flag_beats_the_preset_wherever_it_stands(order):
    explicit = ["--theta", "1.0", "-M", "8", "--template", "Q: {question}", "--extract", "lenient", "--max-tokens", "100"]
    argv = [*explicit, "--preset", "paper"] if order == "flag first" else ["--preset", "paper", *explicit]
    config = eval_with(*argv)
    assert (config.branching.theta, config.M, config.template, config.extract) == (1.0, (8,), "Q: {question}", "lenient")
    assert config.sampling.max_tokens == 100
    assert config.sampling.temperature == 0.6  # not given: the preset's


def test_an_explicit_flag_equal_to_the_default_still_beats_the_preset():
    assert eval_with("--theta", str(BranchingConfig().theta), "--preset", "paper").branching.theta == BranchingConfig().theta


def test_the_paper_preset_lands_in_the_generate_configs():
    branching, sampling, engine = generate_with("--preset", "paper")
    assert (branching.max_sequences, branching.theta) == (32, 2.5)
    assert (sampling.max_tokens, sampling.temperature) == (32768, 0.6)
    assert engine.ctx > sampling.max_tokens


def test_generate_keeps_an_explicit_theta_given_before_the_preset():
    branching, sampling, _ = generate_with("--theta", "1.0", "--preset", "paper")
    assert (branching.theta, branching.max_sequences, sampling.max_tokens) == (1.0, 32, 32768)


@pytest.mark.parametrize("command", [EVAL, GENERATE])
def test_help_lists_the_presets_values(capsys, command):
    with pytest.raises(SystemExit):
        main([command[0], "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for shown in ("-M 32", "--max-tokens 32768", "--temperature 0.6", "--theta 2.5"):
        assert shown in out, shown
    if command is EVAL:
        assert "--extract boxed" in out and "--template '{question}'" in out
