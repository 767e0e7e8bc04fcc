"""``eager calibrate``: find a model's theta on warm-up prompts; store it for ``--theta auto``."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from eager.cli.feedback import Status
from eager.cli.generate import add_model_options
from eager.cli.options import Given, add_config_options, config_from_args
from eager.core.config import BranchingConfig, EngineConfig, SamplingConfig
from eager.errors import EagerError

EPILOG = """\
Grows real EAGER-init trees on warm-up prompts (16 of GSM8K's train split by
default; any .jsonl of questions works, answers only for --labels) at a few
thetas, each chosen from the curve measured so far, and keeps the theta whose
trees have M/2 sequences per prompt on average (--target-sequences S), or
whose generated tokens are R times parallel sampling's (--target-token-ratio R),
or, with --labels, the best Pass@k per generated token among those tried.

The table and the choice are printed; --out gets every measurement, the model's
identity (GGUF sha256 or served model name) and the command. The theta is
stored for this model and entropy measure in the cache ($EAGER_CACHE, else
~/.cache/eager), where `--theta auto` (the default of generate and eval) finds
it; --no-cache leaves the cache alone.

A theta holds for the settings it was measured with: M, max tokens, dynamic
theta and the kind of prompts. Calibrate with the ones you will run.

examples:
  eager calibrate --model smollm2-135m --limit 4 -M 4 --max-tokens 48 --out c.json
  eager calibrate --dataset gsm8k --limit 16 -M 8 --max-tokens 256 --out calib.json --plot calib.png
  eager calibrate --dataset my.jsonl --target-token-ratio 0.3 --out calib.json
  eager calibrate --dataset math --labels --out calib.json
"""


def add_parser(sub) -> None:
    import argparse

    from eager.eval.calibrate import CalibrationConfig
    from eager.eval.grading import EXTRACT_MODES

    p = sub.add_parser("calibrate", help="find a model's theta on warm-up prompts; --theta auto uses it", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("warm-up prompts")
    d.add_argument("--dataset", default="gsm8k", help="gsm8k, math500, math, a .jsonl file, or hf:<dataset id>[:<config>] (default: gsm8k)")
    d.add_argument("--split", default="train", help="dataset split (default: train; ignored for .jsonl files)")
    d.add_argument("--limit", type=int, default=16, help="warm-up prompts (default: 16)")
    d.add_argument("--offset", type=int, default=0, help="skip the first K problems (default: 0)")
    d.add_argument("--question-field", default=None, help="record field with the question (.jsonl / hf; default: question)")
    d.add_argument("--answer-field", default=None, help="record field with the gold answer, for --labels (default: answer)")
    d.add_argument("--template", action=Given, default=None, help="user message with {question} (default: eval's, which asks for \\boxed{}, or for code a ```python block)")

    c = p.add_argument_group("search")
    add_config_options(c, CalibrationConfig)
    c.add_argument("--extract", default="boxed", choices=EXTRACT_MODES, help="--labels: how answers are read (default: boxed)")
    c.add_argument("--grade-timeout", type=float, default=5.0, help="--labels: seconds Math-Verify may spend on one answer; on code (humaneval) each program's CPU and wall-time limit in the sandbox (default: 5)")

    o = p.add_argument_group("output")
    o.add_argument("--out", default="calib.json", help="the JSON file with every measurement (default: calib.json)")
    o.add_argument("--plot", default=None, metavar="FILE.png", help="histogram of warm-up entropies with the chosen theta, and tree size against theta")
    o.add_argument("--no-cache", action="store_true", help="do not store the theta for --theta auto")

    add_model_options(p)
    add_config_options(p.add_argument_group("branching (the rules the theta is for)"), BranchingConfig, exclude=("theta",))
    add_config_options(p.add_argument_group("sampling"), SamplingConfig)
    p.set_defaults(func=cmd_calibrate, parser=p)


def warmup_problems(args):
    from eager.eval.datasets import load_problems

    # without --labels no answer is needed: the question field stands in for one
    answer_field = args.answer_field if args.labels else (args.answer_field or args.question_field or "question")
    problems = load_problems(
        args.dataset, args.split, question_field=args.question_field, answer_field=answer_field, limit=args.limit, offset=args.offset
    )
    if not problems:
        raise EagerError(f"no warm-up prompts selected from {args.dataset!r} (check --limit and --offset)")
    return problems


# Options a calibration command always states, defaults included: what the theta holds for.
STATED = ("model", "dataset", "split", "limit", "max_sequences", "max_tokens")


def command_line(args) -> str:
    """The command that reproduces this calibration: the stated options, then every other that differs from its default."""
    actions = [a for a in args.parser._actions if a.option_strings and a.dest not in ("help", "parser")]  # argparse has no public list
    actions.sort(key=lambda a: STATED.index(a.dest) if a.dest in STATED else len(STATED))
    words = ["eager", "calibrate"]
    for action in actions:
        value = getattr(args, action.dest, action.default)
        if action.nargs == 0 and value != action.const:  # a flag not given (-v and -q share one dest)
            continue
        if value == action.default and action.dest not in STATED:
            continue
        flag = min(action.option_strings, key=len) if action.dest == "max_sequences" else max(action.option_strings, key=len)
        words += [flag] if action.nargs == 0 else [flag, str(value)]
    return " ".join(shlex.quote(w) for w in words)


def _progress(verbosity: int, points: int, prompts: int):
    """A status line (terminal) or log lines (elsewhere): trees of all points done, the theta tried, tok/s."""
    status = Status(verbosity)
    total = (points + 1) * prompts

    def on_progress(p) -> None:
        done = p.point * p.trees_total + p.trees_done
        theta = "warm-up" if p.point == 0 else f"theta {p.theta:.3f}"
        status.update(f"calibrating: {done}/{total} trees at most, point {p.point} ({theta}), {p.tokens_per_s:.1f} tok/s")

    return status, on_progress


def _identity(model: str, executor) -> dict:
    from eager.api import theta_identity

    identity = theta_identity(model)
    server = getattr(executor, "server", None)
    if server is not None:
        return {"key": identity, "served_model": server.model, "url": server.url}
    return {"key": identity, "gguf_sha256": identity.removeprefix("gguf:")}


def cmd_calibrate(args) -> int:
    from eager.api import entropy_measure
    from eager.eval.calibrate import CalibrationConfig, calibrate, plot_calibration
    from eager.eval.code import code_verifier
    from eager.eval.datasets import DEFAULT_TEMPLATE, template_for
    from eager.eval.executors import ModelSpec, absolute_model, open_executor
    from eager.eval.grading import Grader
    from eager.eval.verify import GoldAnswerVerifier, safe
    from eager.models import write_calibration

    config = config_from_args(CalibrationConfig, args)
    branching = config_from_args(BranchingConfig, args, exclude=("theta",))
    sampling = config_from_args(SamplingConfig, args)
    engine = config_from_args(EngineConfig, args)
    problems = warmup_problems(args)
    template = template_for(problems[0], DEFAULT_TEMPLATE if args.template is None else args.template)  # the one sent
    code = code_verifier(problems, args.grade_timeout, unsafe=False) if args.labels else None  # code: tests pass in the sandbox
    verify = (code or safe(GoldAnswerVerifier(Grader(args.grade_timeout)), extract=args.extract)) if args.labels else None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec(absolute_model(args.model), engine, max_sequences=max(64, branching.max_sequences), chat_template=args.chat_template)
    status, on_progress = _progress(args.verbosity, config.max_points, len(problems))
    executor = open_executor(spec)
    try:
        result = calibrate(
            executor, problems, branching=branching, sampling=sampling, config=config, template=template,
            chat=not args.raw_prompt, verify=verify, on_progress=on_progress,
        )
        identity = _identity(args.model, executor)
    finally:
        status.close()
        executor.close()
        if code is not None:
            code.close()
    record = {
        "theta": round(result.theta, 4),
        "model": args.model,
        "identity": identity,
        "measure": entropy_measure(branching),
        "command": command_line(args),
        "data": {"dataset": args.dataset, "split": args.split, "offset": args.offset, "limit": args.limit, "template": template},
        **result.to_dict(),
    }
    Path(args.out).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(render_table(result))
    print(f"wrote {args.out}")
    if args.plot:
        plot_calibration(result, args.plot)
        print(f"wrote {args.plot}")
    if not args.no_cache:
        cached = write_calibration(identity["key"], record["measure"], record)
        print(f"stored for --theta auto on {args.model}: {cached}")
    return 0


def render_table(result) -> str:
    """The points, the chosen theta marked, and why it was chosen."""
    labels = result.config.labels
    warm = result.warmup
    head = "| theta | mean sequences | generated tokens | tokens / parallel |" + (" Pass@k | Pass@k per 1k tokens |" if labels else "") + " s |"
    rule = "|---:|---:|---:|---:|" + ("---:|---:|" if labels else "") + "---:|"
    lines = [
        f"warm-up: {len(warm.entropies)} chains, {warm.generated_tokens} tokens; entropy p50 {_q(warm, 50)}, p99 {_q(warm, 99)}, max {warm.highest:.3f} nats",
        "",
        head,
        rule,
    ]
    for p in sorted(result.points, key=lambda p: p.theta):
        mark = " <-" if p.theta == result.theta else ""
        cells = [f"{p.theta:.3f}{mark}", f"{p.mean_sequences:.2f}", str(p.generated_tokens), f"{p.token_ratio:.3f}"]
        if labels:
            cells += [f"{p.pass_at_k:.3f}", f"{p.pass_per_kilotoken:.3f}"]
        lines.append("| " + " | ".join(cells + [f"{p.wall_s:.1f}"]) + " |")
    ratio = 1 / result.branching.max_sequences
    cells = [f">= {warm.highest:.3f} (no fork)", "1.00", str(warm.generated_tokens), f"{ratio:.3f}"]
    if labels:
        cells += [f"{warm.pass_at_1:.3f}", "-"]
    lines.append("| " + " | ".join(cells + [f"{warm.wall_s:.1f}"]) + " |")
    reached = "" if result.reached else f" (no theta tried came within {result.config.tolerance:.0%} of the target)"
    lines += ["", f"theta = {result.theta:.3f}: {result.reason}{reached}; {result.wall_s:.0f} s"]
    return "\n".join(lines)


def _q(warm, q: float) -> str:
    import numpy as np

    values = warm.all_entropies()
    return f"{np.percentile(values, q):.3f}" if values.size else "-"
