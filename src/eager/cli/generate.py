"""``eager generate``: trees for one or more prompts, as a tree view or JSON."""

from __future__ import annotations

import logging
import sys
from dataclasses import fields

from eager.cli.feedback import Status, duration
from eager.cli.generate_output import as_json, as_jsonl, render_tree, settings
from eager.cli.options import GENERATE_PRESETS, Given, add_config_options, add_field_option, add_preset_option, config_from_args
from eager.core.config import BranchingConfig, EngineConfig, SamplingConfig, options_of
from eager.errors import EagerError
from eager.eval.config import EvalConfig
from eager.files import read_lines
from eager.models import DEFAULT_MODEL

log = logging.getLogger(__name__)

EPILOG = """\
EAGER starts one chain per prompt, watches the entropy of every next-token
distribution and forks a new branch (sharing the prefix's KV cache) only where
the model is uncertain. `parallel` samples M independent chains instead.

theta: without --theta (or with --theta auto) each model gets its own: the
value `eager calibrate` stored for it, else the one shipped with a packaged
model, else the paper's 2.2 with a warning.

examples:
  eager generate --prompt "What is 17 * 23?" -M 8
  eager generate --prompt "What is 17 * 23?" -M 8 --theta 1.2
  eager generate --model smollm2-135m --prompt "Hi" --method parallel -M 4 --json
  cat prompts.txt | eager generate --prompt-file - --jsonl > trees.jsonl
  eager models
"""


def add_model_options(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"packaged model name, path to a .gguf file, or openai:http://HOST:PORT/v1[#NAME] (default: {DEFAULT_MODEL}; see `eager models`); a server's key comes from $OPENAI_API_KEY, or from the URL as http://KEY@HOST or http://USER:PASSWORD@HOST (Basic auth), and is never printed")
    g.add_argument("--raw-prompt", action="store_true", help="send the prompt as raw text, without the model's chat template")
    g.add_argument("--chat-template", default=None, metavar="FILE", help="openai: models whose server cannot apply the chat template: a .gguf or Jinja file to apply it here")
    add_config_options(g, EngineConfig)


THETA_HELP = (
    "entropy threshold in nats for a fork (the top-20 maximum is ln 20 = 3.0), or auto: the value "
    "`eager calibrate` stored for this model, else the one shipped with a packaged model, else the paper's "
    f"{BranchingConfig.theta} with a warning (default: auto)"
)


def theta_value(text: str) -> float | str:
    """``--theta``: a number of nats or "auto"."""
    import argparse

    from eager.api import AUTO

    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of nats or {AUTO}, got {text!r}") from None


def add_branching_options(group, *, exclude: tuple[str, ...] = ()) -> None:
    """BranchingConfig's flags, with ``--theta`` taking "auto" (the default) as well as a number."""
    from eager.api import AUTO

    for f in options_of(BranchingConfig):
        if f.name == "theta" and f.name not in exclude:
            group.add_argument("--theta", dest="theta", action=Given, type=theta_value, default=AUTO, help=THETA_HELP)
        elif f.name not in exclude:
            add_field_option(group, f)


def chosen_theta(args, model: str):
    """The theta of ``--theta`` for ``model``, and where it came from (``eager.api.resolve_theta``)."""
    from eager.api import resolve_theta

    rules = config_from_args(BranchingConfig, args, exclude=("theta", "max_sequences"))
    return resolve_theta(args.theta, model=model, branching=rules)


def print_theta_note(choice, *, to) -> None:
    """Say which theta a run uses (on ``to``, None: nowhere); a warning on stderr when nothing is known of the model."""
    if choice.source == "default":
        print(f"eager: warning: {choice.note}", file=sys.stderr)
    elif to is not None:
        print(choice.note, file=to)


def add_parser(sub) -> None:
    gen = sub.add_parser("generate", help="generate a branching tree (or M parallel samples) for one or more prompts", epilog=EPILOG, formatter_class=_formatter())
    gen.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for several; they are batched together)")
    gen.add_argument("--prompt-file", help="a UTF-8 text file with one prompt per line; - reads standard input")
    out = gen.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object: {settings, results: [one per prompt]} (schema: eager/cli/generate.schema.json)")
    out.add_argument("--jsonl", action="store_true", help="print one JSON line per prompt: {settings, result} (same schema)")
    gen.add_argument("--full", action="store_true", help="print whole texts (default: a long text shows its start and its end, where the answer is)")
    add_field_option(gen, next(f for f in fields(EvalConfig) if f.name == "extract"))
    add_model_options(gen)
    b = gen.add_argument_group("branching (EAGER-init)")
    b.add_argument("--method", default="eager-init", help="eager-init (entropy-aware branching) or parallel (M independent samples) (default: eager-init)")
    add_branching_options(b)
    add_config_options(gen.add_argument_group("sampling"), SamplingConfig)
    add_preset_option(gen, GENERATE_PRESETS)
    gen.set_defaults(func=cmd_generate)


def _formatter():
    import argparse

    return argparse.RawDescriptionHelpFormatter


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompt_file:
        lines = _stdin_lines() if args.prompt_file == "-" else read_lines(args.prompt_file, "prompt file")
        prompts += [line for line in lines if line.strip()]
    if not prompts:
        raise EagerError("give a prompt with --prompt TEXT or --prompt-file FILE")
    for i, prompt in enumerate(prompts):
        if not prompt.strip():
            raise EagerError("the prompt is empty" if len(prompts) == 1 else f"prompt {i + 1} is empty")
    return prompts


def _stdin_lines() -> list[str]:
    try:
        return sys.stdin.buffer.read().decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise EagerError(f"standard input is not valid UTF-8 (at byte {error.start})") from None


class _Progress:
    """The engine's on_step: prompts done, branches, tokens and tok/s on the status line."""

    def __init__(self, verbosity: int, total: int) -> None:
        self.status = Status(verbosity)
        self.total = total
        self.last = None

    def __call__(self, stats) -> None:
        self.last = stats
        self.status.update(progress_text(stats, self.total))

    def done(self) -> None:
        self.status.done(progress_text(self.last, self.total) if self.last is not None else None)


def progress_text(stats, total: int) -> str:
    rate = stats.generated_tokens / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
    return (
        f"generating: {stats.prompts_done}/{total} prompts done, {stats.live_branches} branches live, "
        f"{stats.generated_tokens} tokens, {rate:.1f} tok/s, {duration(stats.elapsed_s)}"
    )


def _settings(args, theta, branching, sampling, engine) -> dict:
    return settings(
        model=args.model, method=args.method, theta=theta if args.method != "parallel" else None,
        branching=branching, sampling=sampling, engine=engine, chat=not args.raw_prompt,
    )


def cmd_generate(args) -> int:
    from eager.api import generate

    prompts = _read_prompts(args)
    theta = chosen_theta(args, args.model)
    branching = config_from_args(BranchingConfig, args, exclude=("theta",), theta=theta.value)
    sampling = config_from_args(SamplingConfig, args)
    engine = config_from_args(EngineConfig, args)
    log.debug("%d prompts, method %s, %s; %s; %s; %s", len(prompts), args.method, theta.note, branching, sampling, engine)
    progress = _Progress(args.verbosity, len(prompts))
    try:
        results = generate(
            prompts, model=args.model, method=args.method, branching=branching, sampling=sampling, engine=engine,
            chat=not args.raw_prompt, chat_template=args.chat_template, on_step=progress,
        )
    finally:
        progress.done()
    machine = args.json or args.jsonl
    if args.method != "parallel":  # after the run: a run that fails says only its error, in one line
        print_theta_note(theta, to=None if machine else sys.stdout)
    if machine:
        run_settings = _settings(args, theta, branching, sampling, engine)
        print(as_json(run_settings, results) if args.json else as_jsonl(run_settings, results))
    else:
        for result in results:
            print(render_tree(result, full=args.full, extract=args.extract))
    return 0
