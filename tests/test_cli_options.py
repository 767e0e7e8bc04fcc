"""Options are defined once: the CLI's flags, defaults and help come from the config dataclasses."""

from __future__ import annotations

from dataclasses import fields

import pytest

from eager.cli import build_parser, main
from eager.cli.options import flagged, flag_names
from eager.core.config import BranchingConfig, EngineConfig, SamplingConfig, options_of
from eager.eval.budget import ReallocationConfig


def parsed(*argv: str):
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("cls", [BranchingConfig, SamplingConfig, EngineConfig])
def test_every_generate_default_equals_its_config_default(cls):
    args = parsed("generate", "--prompt", "x")
    for f in options_of(cls):
        expected = "auto" if f.name == "theta" else getattr(cls(), f.name)  # theta is resolved per model (calibrate)
        assert getattr(args, f.name) == expected, f.name


@pytest.mark.parametrize("cls", [SamplingConfig, EngineConfig, ReallocationConfig])
def test_every_eval_default_equals_its_config_default(cls):
    args = parsed("eval", "--dataset", "gsm8k", "--out", "o")
    for f in options_of(cls):
        assert getattr(args, f.name) == getattr(cls(), f.name), f.name


def test_eval_branching_defaults_equal_the_config_and_M_is_a_budget_list():
    args = parsed("eval", "--dataset", "gsm8k", "--out", "o")
    for f in options_of(BranchingConfig):
        if f.name != "max_sequences":
            expected = "auto" if f.name == "theta" else getattr(BranchingConfig(), f.name)
            assert getattr(args, f.name) == expected, f.name
    assert args.M == str(BranchingConfig().max_sequences)


def test_every_config_field_has_help_and_a_flag():
    for cls in (BranchingConfig, SamplingConfig, EngineConfig, ReallocationConfig):
        assert options_of(cls) == list(fields(cls)), cls.__name__


def test_help_texts_show_the_config_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: auto" in out
    assert f"(default: {SamplingConfig().max_tokens})" in out
    assert f"(default: {EngineConfig().ctx})" in out


def test_flags_set_config_fields():
    args = parsed("generate", "--prompt", "x", "-M", "3", "--theta", "1.5", "--no-dynamic-theta", "--max-tokens", "9", "--ctx", "512")
    assert (args.max_sequences, args.theta, args.dynamic_theta, args.max_tokens, args.ctx) == (3, 1.5, False, 9, 512)


def test_library_messages_name_options_and_the_cli_shows_flags(capsys):
    assert flagged("top_p must be in (0, 1], got 0", flag_names(SamplingConfig)) == "--top-p must be in (0, 1], got 0"
    assert main(["generate", "--prompt", "x", "--top-p", "0"]) == 2
    assert "eager: error: --top-p must be in (0, 1], got 0" in capsys.readouterr().err
