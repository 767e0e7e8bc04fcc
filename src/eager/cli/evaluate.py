"""``eager eval`` and ``eager report``: methods over a data set, resumable; summaries."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from eager.cli.feedback import Status, duration, eta_s
from eager.cli.generate import add_branching_options, add_model_options, chosen_theta, print_theta_note
from eager.cli.options import PAPER, Given, add_config_options, add_preset_option, config_from_args
from eager.core.config import BranchingConfig, EngineConfig, SamplingConfig
from eager.errors import EagerError

log = logging.getLogger(__name__)

# The paper's settings for an evaluation: the question alone as the user message (the
# reference sends the bare AIME / MATH / HMMT problem through the chat template) and
# boxed-only answers.
EVAL_PRESETS = {
    "paper": {
        "M": str(PAPER["max_sequences"]),
        **{k: v for k, v in PAPER.items() if k != "max_sequences"},
        "extract": "boxed",
        "template": "{question}",
    }
}

EPILOG = """\
methods (all on the same prompts and model):
  parallel      M independent samples per prompt
  eager-init    one entropy-branching tree per prompt, at most M sequences
  eager-adapt   eager-init, then the saved budget goes to prompts whose tree
                reached M (no labels), up to 3M extra each
  eager         eager-init, then the saved budget goes to prompts with no
                correct answer (labels), at-cap first, up to M extra each

output (in --out): <method>.jsonl (one record per prompt and M), config.json,
summary.json, summary.md, tradeoff.png. Interrupted? Run the same command again:
finished prompts are kept and skipped. A different configuration in the same
directory is refused; adding a method is fine.

answers: the last \\boxed{} of a sequence only, as the paper (--extract boxed);
--extract lenient also takes the text after "answer is", else the last number.
`eager grade --gold GOLD TEXT` shows how one output is graded.

examples:
  eager eval --model smollm2-135m --dataset gsm8k --limit 20 -M 8 --out runs/gsm8k
  eager eval --dataset math500 --limit 50 -M 4,8,16 --methods parallel,eager-adapt --out runs/sweep
  eager eval --dataset my.jsonl --question-field problem --answer-field final --out runs/mine
  eager report runs/gsm8k
  eager eval --dataset gsm8k --limit 200 -M 8 --ray --ray-workers 2 --out runs/ray
  eager eval --dataset math500 -M 16 --ray HEAD:6379 --out runs/cluster   (docs/scale.md)
  eager eval --model openai:http://HOST:8000/v1 --dataset math500 --preset paper --out runs/paper
"""


def add_parsers(sub) -> None:
    import argparse

    ev = sub.add_parser("eval", help="evaluate methods over a dataset at the same budget; resumable", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_eval_options(ev)
    ev.set_defaults(func=cmd_eval)
    rep = sub.add_parser("report", help="re-render summary.md, summary.json and tradeoff.png of an eval directory")
    rep.add_argument("dir", help="the --out directory of an `eager eval` run")
    rep.set_defaults(func=cmd_report)


def _add_eval_options(p) -> None:
    from eager.eval.budget import ReallocationConfig
    from eager.eval.config import EvalConfig
    from eager.eval.datasets import DATASETS
    from eager.eval.methods import EVAL_METHODS

    d = p.add_argument_group("data")
    d.add_argument("--dataset", required=True, help=f"{', '.join(DATASETS)}, a .jsonl file, or hf:<dataset id>[:<config>]")
    d.add_argument("--split", default="test", help="dataset split (default: test; ignored for .jsonl files)")
    d.add_argument("--question-field", default=None, help="record field with the question (.jsonl / hf; default: question)")
    d.add_argument("--answer-field", default=None, help="record field with the gold answer (.jsonl / hf; default: answer)")
    d.add_argument("--id-field", default=None, help="record field with a unique id (.jsonl / hf; default: id, else the line number)")
    d.add_argument("--limit", type=int, default=None, help="evaluate at most N problems (after --ids and --offset)")
    d.add_argument("--offset", type=int, default=0, help="skip the first K problems (default: 0)")
    d.add_argument("--ids", default=None, metavar="FILE", help="a file of problem ids, one per line: evaluate only those")
    d.add_argument("--template", action=Given, default=None, help="user message with {question}; literal braces doubled (default: asks for the answer in \\boxed{}; for humaneval, for the function in a ```python block)")

    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="output directory (created; an existing run of the same configuration is resumed)")
    r.add_argument("--methods", default=",".join(EVAL_METHODS), help=f"comma list of methods (default: {','.join(EVAL_METHODS)})")
    r.add_argument("-M", "--max-sequences", dest="M", action=Given, default=str(BranchingConfig.max_sequences), help=f"sequences per prompt; a comma list like 4,8,16 sweeps the budget (default: {BranchingConfig.max_sequences})")
    r.add_argument("--grade-timeout", type=float, default=5.0, help="seconds Math-Verify may spend on one answer; on code (humaneval) each program's CPU and wall-time limit in the sandbox (default: 5)")
    add_config_options(r, EvalConfig)

    add_model_options(p)
    add_branching_options(p.add_argument_group("branching (EAGER-init)"), exclude=("max_sequences",))
    add_config_options(p.add_argument_group("reallocation (eager-adapt, eager)"), ReallocationConfig)
    add_config_options(p.add_argument_group("sampling"), SamplingConfig)

    y = p.add_argument_group("Ray (pip install 'ray==2.60.0')")
    y.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS", help="grow the trees on Ray workers: no ADDRESS starts a cluster on this machine; HEAD:6379 or auto joins a running one")
    y.add_argument("--ray-workers", type=int, default=None, help="workers, each loading the model once (default: 2 on a local cluster, one per node on a running one)")
    y.add_argument("--ray-cpus-per-worker", type=int, default=None, help="CPUs per worker, also llama.cpp threads unless --threads (default: CPUs / workers locally, the smallest node's CPUs on a cluster)")
    y.add_argument("--ray-retries", type=int, default=2, help="a shard whose worker dies moves to a new worker at most this many times (default: 2)")
    add_preset_option(p, EVAL_PRESETS)


def _budgets(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise EagerError(f"-M must be an integer or a comma list like 4,8,16, got {text!r}") from None


def eval_theta(args):
    """``--theta`` for the run's model (a ThetaChoice), or None for a model that cannot be
    identified: that run fails when the model loads, after the data and the output folder are checked."""
    try:
        return chosen_theta(args, args.model)
    except EagerError:
        return None


def eval_config(args, theta=None):
    """The EvalConfig of the parsed flags; ``theta`` (a ThetaChoice) is :func:`eval_theta`'s unless given."""
    from eager.api import ThetaChoice
    from eager.eval.budget import ReallocationConfig
    from eager.eval.config import EvalConfig
    from eager.eval.datasets import DEFAULT_TEMPLATE, load_id_file

    theta = theta or eval_theta(args) or ThetaChoice(BranchingConfig.theta, "default", "the model is unknown")
    return EvalConfig(
        out_dir=args.out,
        dataset=args.dataset,
        model=args.model,
        methods=args.methods,
        M=_budgets(args.M),
        split=args.split,
        question_field=args.question_field,
        answer_field=args.answer_field,
        id_field=args.id_field,
        limit=args.limit,
        offset=args.offset,
        ids=tuple(load_id_file(args.ids)) if args.ids else None,
        template=args.template if args.template is not None else DEFAULT_TEMPLATE,
        chat=not args.raw_prompt,
        chat_template=args.chat_template,
        branching=config_from_args(BranchingConfig, args, exclude=("max_sequences", "theta"), theta=theta.value),
        theta_source=theta.source,
        sampling=config_from_args(SamplingConfig, args),
        engine=config_from_args(EngineConfig, args),
        reallocation=config_from_args(ReallocationConfig, args),
        grade_timeout_s=args.grade_timeout,
        extract=args.extract,
        save_entropies=args.save_entropies,
        unsafe_exec=args.unsafe_exec,
    )


class EvalProgress:
    """``eager eval``'s status: per phase, prompts (trees) done of those to run, branches, tok/s, records, ETA.

    On a terminal one live line per phase; elsewhere a log line every interval (``eager.cli.feedback``).
    """

    def __init__(self, verbosity: int, max_tokens: int) -> None:
        self.verbosity = verbosity
        self.max_tokens = max_tokens
        self.status: Status | None = None
        self.last = None

    def __call__(self, p) -> None:
        if self.last is None or p.phase != self.last.phase:
            self.close()
            self.status = Status(self.verbosity)
            what = "one tree per question, method and M" if p.phase == "trees" else "extra trees for the prompts owed sequences"
            log.info("%s: %d prompts to run (%s)", p.phase, p.trees_total, what)
        self.last = p
        self.status.update(self.text(p))

    def text(self, p) -> str:
        eta = eta_s(p.trees_done, p.trees_total, p.elapsed_s, steps=p.steps, max_steps=self.max_tokens, in_flight=p.trees_in_flight)
        if eta is None:
            when = "ETA after the first step"
        else:
            when = f"ETA {'~' if p.trees_done == 0 and eta > 0 else ''}{duration(eta)}"  # ~: from the steps, none finished yet
        share = p.trees_done / p.trees_total if p.trees_total else 1.0
        return (
            f"{p.phase}: {p.trees_done}/{p.trees_total} prompts ({share:.0%}), {p.live_branches} branches live, "
            f"{p.tokens_per_s:.1f} tok/s, {p.records_written} records written, {duration(p.elapsed_s)} elapsed, {when}"
        )

    def close(self) -> None:
        if self.status is not None:
            self.status.done(self.text(self.last))
            self.status = None


def _print_report(out: str) -> None:
    from eager.eval.report import SUMMARY_JSON, SUMMARY_MD, TRADEOFF_PNG

    path = Path(out)
    print((path / SUMMARY_MD).read_text(encoding="utf-8"))
    print(f"wrote {path / SUMMARY_JSON}, {path / SUMMARY_MD}, {path / TRADEOFF_PNG}")


def ray_options(args):
    """RayOptions when --ray is given, else None; the other --ray-* options need it."""
    from eager.eval.distributed import RayOptions

    if args.ray is None:
        given = [name for name in ("ray_workers", "ray_cpus_per_worker") if getattr(args, name) is not None]
        if given:
            raise EagerError(f"--{given[0].replace('_', '-')} needs --ray")
        return None
    return RayOptions(address=args.ray, workers=args.ray_workers, cpus_per_worker=args.ray_cpus_per_worker, retries=args.ray_retries)


def cmd_eval(args) -> int:
    from eager.eval.runner import run_eval

    theta = eval_theta(args)
    config = eval_config(args, theta)
    ray = ray_options(args)
    progress = EvalProgress(args.verbosity, config.sampling.max_tokens)
    try:
        run_eval(config, on_progress=progress, ray=ray)
    finally:
        progress.close()
    _print_report(config.out_dir)
    if theta is not None and any(m != "parallel" for m in config.methods):
        print_theta_note(theta, to=sys.stdout)  # after the run: a run that fails says only its error, in one line
    return 0


def cmd_report(args) -> int:
    from eager.eval.report import write_report

    write_report(args.dir)
    _print_report(args.dir)
    return 0
