"""``eager generate``: trees for one or more prompts, as a tree view or JSON."""

from __future__ import annotations

import json
import sys

from eager.cli.options import GENERATE_PRESETS, Given, add_config_options, add_field_option, add_preset_option, config_from_args
from eager.core.config import BranchingConfig, EngineConfig, SamplingConfig, options_of
from eager.errors import EagerError
from eager.files import read_lines
from eager.models import DEFAULT_MODEL

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
  eager models
"""


def add_model_options(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"packaged model name, path to a .gguf file, or openai:http://HOST:PORT/v1[#NAME] (default: {DEFAULT_MODEL}; see `eager models`)")
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
    gen.add_argument("--json", action="store_true", help="print one JSON object (a list under 'results' when several prompts)")
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


def _progress(total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, unit="prompt", desc="generating", disable=None, file=sys.stderr, leave=False)

    def on_step(stats) -> None:
        bar.n = stats.prompts_done
        rate = stats.generated_tokens / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
        bar.set_postfix(branches=stats.live_branches, tok_s=f"{rate:.1f}", refresh=False)
        bar.refresh()

    return bar, on_step


def cmd_generate(args) -> int:
    from eager.api import generate

    prompts = _read_prompts(args)
    theta = chosen_theta(args, args.model)
    branching = config_from_args(BranchingConfig, args, exclude=("theta",), theta=theta.value)
    sampling = config_from_args(SamplingConfig, args)
    engine = config_from_args(EngineConfig, args)
    bar, on_step = _progress(len(prompts))
    try:
        results = generate(
            prompts, model=args.model, method=args.method, branching=branching, sampling=sampling, engine=engine,
            chat=not args.raw_prompt, chat_template=args.chat_template, on_step=on_step,
        )
    finally:
        bar.close()
    if args.method != "parallel":  # after the run: a run that fails says only its error, in one line
        print_theta_note(theta, to=None if args.json else sys.stdout)
    if args.json:
        payload = [{**r.to_dict(), "theta": theta.value, "theta_source": theta.source} for r in results]
        print(json.dumps(payload[0] if len(payload) == 1 else {"results": payload}, ensure_ascii=False))
    else:
        for result in results:
            print(render_tree(result))
    return 0


def _one_line(text: str, width: int = 400) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _depth(result, seq) -> int:
    depth, parent = 0, seq.parent
    while parent is not None:
        depth += 1
        parent = result.sequences[parent].parent
    return depth


def render_tree(result) -> str:
    """The human view: each branch, where it forked and the entropy there."""
    forks = {f.child: f for f in result.forks}
    lines = [f"prompt ({result.prompt_tokens} tokens, {result.method}): {_one_line(result.prompt, 120)}"]
    for seq in result.sequences:
        indent = "  " * _depth(result, seq)
        if seq.parent is None:
            origin, shown = "root", seq.text
        else:
            fork = forks[seq.index]
            origin = f"forked from #{seq.parent} at token {seq.fork_at} (H={fork.entropy:.2f} > {fork.threshold:.2f})"
            shown = "..." + seq.own_text
        lines.append(f"{indent}#{seq.index} {origin}: {len(seq.token_ids)} tokens, {seq.finish_reason}")
        lines.append(f"{indent}   {_one_line(shown)}")
    saved = 1 - result.generated_tokens / result.sequence_tokens if result.sequence_tokens else 0.0
    rate = result.generated_tokens / result.wall_s if result.wall_s > 0 else 0.0
    lines.append(
        f"{len(result.sequences)} sequences, {len(result.forks)} forks; generated {result.generated_tokens} tokens "
        f"for {result.sequence_tokens} sequence tokens ({saved:.0%} shared); {result.wall_s:.1f} s, {rate:.1f} tok/s"
    )
    return "\n".join(lines)
