"""The ``eager`` command line. Only this module and the report module print."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from eager.errors import EagerError
from eager.models import DEFAULT_MODEL

EPILOG = """\
EAGER starts one chain per prompt, watches the entropy of every next-token
distribution and forks a new branch (sharing the prefix's KV cache) only where
the model is uncertain. `parallel` samples M independent chains instead.

examples:
  eager generate --prompt "What is 17 * 23?" -M 8 --theta 2.2
  eager generate --model smollm2-135m --prompt "Hi" --method parallel -M 4 --json
  eager models
"""

EVAL_EPILOG = """\
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

examples:
  eager eval --model smollm2-135m --dataset gsm8k --limit 20 -M 8 --out runs/gsm8k
  eager eval --dataset math500 --limit 50 -M 4,8,16 --methods parallel,eager-adapt --out runs/sweep
  eager eval --dataset my.jsonl --question-field problem --answer-field final --out runs/mine
  eager report runs/gsm8k
  eager eval --dataset gsm8k --limit 200 -M 8 --ray --ray-workers 2 --out runs/ray
  eager eval --dataset math500 -M 16 --ray HEAD:6379 --out runs/cluster   (docs/scale.md)
"""


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"packaged model name or path to a .gguf file (default: {DEFAULT_MODEL}; see `eager models`)")
    g.add_argument("--ctx", type=int, default=16384, help="KV cache cells shared by all sequences (default: 16384)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for llama.cpp (default: the cores this process may use)")
    g.add_argument("--raw-prompt", action="store_true", help="send the prompt as raw text, without the model's chat template")


def _add_branching_rules(b) -> None:
    b.add_argument("--theta", type=float, default=2.2, help="entropy threshold in nats for a fork (default: 2.2; the top-20 maximum is ln 20 = 3.0)")
    b.add_argument("--no-dynamic-theta", dest="dynamic_theta", action="store_false", help="use theta as is, not max(theta, running P99 of the prompt's entropies)")
    b.add_argument("--window", type=int, default=1000, help="W: no forks after this many steps in a row without one (default: 1000)")
    b.add_argument("--entropy", choices=["topk", "full"], default="topk", help="top-K renormalised entropy (paper) or exact full-vocabulary entropy (default: topk)")
    b.add_argument("--entropy-top-k", type=int, default=20, help="K for top-K entropy (default: 20)")
    b.add_argument("--end-of-thinking", default="</think>", help='a sequence forks no more after this marker (default: "</think>"; "" disables)')


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("sampling")
    s.add_argument("--max-tokens", type=int, default=512, help="completion tokens per sequence (default: 512)")
    s.add_argument("--temperature", type=float, default=0.6, help="sampling temperature, 0 = greedy (default: 0.6)")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0, off)")
    s.add_argument("--top-k", type=int, default=0, help="sample among the k most probable tokens (default: 0, off)")
    s.add_argument("--seed", type=int, default=0, help="run seed: the same seed reproduces the same tree (default: 0)")


def _add_generation_options(p: argparse.ArgumentParser) -> None:
    _add_model_options(p)
    b = p.add_argument_group("branching (EAGER-init)")
    b.add_argument("--method", default="eager-init", help="eager-init (entropy-aware branching) or parallel (M independent samples) (default: eager-init)")
    b.add_argument("-M", "--max-sequences", dest="M", type=int, default=8, help="sequences per prompt, live and finished (default: 8)")
    _add_branching_rules(b)
    _add_sampling_options(p)


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    from eager.datasets import DATASETS
    from eager.evaluate import METHODS

    d = p.add_argument_group("data")
    d.add_argument("--dataset", required=True, help=f"{', '.join(DATASETS)}, a .jsonl file, or hf:<dataset id>[:<config>]")
    d.add_argument("--split", default="test", help="dataset split (default: test; ignored for .jsonl files)")
    d.add_argument("--question-field", default=None, help="record field with the question (.jsonl / hf; default: question)")
    d.add_argument("--answer-field", default=None, help="record field with the gold answer (.jsonl / hf; default: answer)")
    d.add_argument("--id-field", default=None, help="record field with a unique id (.jsonl / hf; default: id, else the line number)")
    d.add_argument("--limit", type=int, default=None, help="evaluate at most N problems (after --ids and --offset)")
    d.add_argument("--offset", type=int, default=0, help="skip the first K problems (default: 0)")
    d.add_argument("--ids", default=None, metavar="FILE", help="a file of problem ids, one per line: evaluate only those")
    d.add_argument("--template", default=None, help="user message with {question}; literal braces doubled (default: asks for the answer in \\boxed{})")

    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="output directory (created; an existing run of the same configuration is resumed)")
    r.add_argument("--methods", default=",".join(METHODS), help=f"comma list of methods (default: {','.join(METHODS)})")
    r.add_argument("-M", "--max-sequences", dest="M", default="8", help="sequences per prompt; a comma list like 4,8,16 sweeps the budget (default: 8)")
    r.add_argument("--max-prompts-in-flight", type=int, default=None, help="cap on trees decoded together (default: as many as the cache holds)")
    r.add_argument("--grade-timeout", type=float, default=5.0, help="seconds Math-Verify may spend on one answer (default: 5)")

    _add_model_options(p)
    b = p.add_argument_group("branching (EAGER-init)")
    _add_branching_rules(b)
    a = p.add_argument_group("reallocation (eager-adapt, eager)")
    a.add_argument("--adapt-extra-factor", type=int, default=3, help="eager-adapt: at most this x M extra sequences per hard prompt (default: 3)")
    a.add_argument("--full-extra-factor", type=int, default=1, help="eager: at most this x M extra sequences per hard prompt (default: 1)")
    a.add_argument("--retry-decay", type=float, default=0.8, help="eager: theta multiplier per retry tree of a prompt below the cap (default: 0.8)")
    a.add_argument("--retry-late-decay", type=float, default=0.9, help="eager: extra theta multiplier per retry from the third tree on (default: 0.9)")
    _add_sampling_options(p)

    y = p.add_argument_group("Ray (pip install 'ray==2.60.0')")
    y.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS", help="grow the trees on Ray workers: no ADDRESS starts a cluster on this machine; HEAD:6379 or auto joins a running one")
    y.add_argument("--ray-workers", type=int, default=None, help="workers, each loading the model once (default: 2 on a local cluster, one per node on a running one)")
    y.add_argument("--ray-cpus-per-worker", type=int, default=None, help="CPUs per worker, also llama.cpp threads unless --threads (default: CPUs / workers locally, the smallest node's CPUs on a cluster)")
    y.add_argument("--ray-retries", type=int, default=2, help="a shard whose worker dies moves to a new worker at most this many times (default: 2)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eager",
        description="Entropy-aware branching generation (EAGER) for cheaper inference-time scaling, on llama.cpp.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = sub.add_parser("generate", help="generate a branching tree (or M parallel samples) for one or more prompts", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for several; they are batched together)")
    gen.add_argument("--prompt-file", help="a text file with one prompt per line")
    gen.add_argument("--json", action="store_true", help="print one JSON object (a list under 'results' when several prompts)")
    _add_generation_options(gen)
    gen.set_defaults(func=cmd_generate)

    ev = sub.add_parser("eval", help="evaluate methods over a dataset at the same budget; resumable", epilog=EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_eval_options(ev)
    ev.set_defaults(func=cmd_eval)

    rep = sub.add_parser("report", help="re-render summary.md, summary.json and tradeoff.png of an eval directory")
    rep.add_argument("dir", help="the --out directory of an `eager eval` run")
    rep.set_defaults(func=cmd_report)

    models = sub.add_parser("models", help="list the packaged models")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(func=cmd_models)

    from eager.bench import add_bench_parser

    add_bench_parser(sub)
    return parser


# -- generate ---------------------------------------------------------------------------


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompt_file:
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                prompts += [line.rstrip("\n") for line in f if line.strip()]
        except OSError as e:
            raise EagerError(f"cannot read --prompt-file: {e.strerror}: {args.prompt_file}") from None
    if not prompts:
        raise EagerError("give a prompt with --prompt TEXT or --prompt-file FILE")
    for i, prompt in enumerate(prompts):
        if not prompt.strip():
            raise EagerError("the prompt is empty" if len(prompts) == 1 else f"prompt {i + 1} is empty")
    return prompts


def _progress(total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, unit="prompt", desc="generating", disable=None, file=sys.stderr, leave=False)

    def on_step(stats) -> None:
        bar.n = stats.prompts_done
        rate = stats.generated_tokens / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
        bar.set_postfix(branches=stats.live_branches, tok_s=f"{rate:.1f}", refresh=False)
        bar.refresh()

    return bar, on_step


def _rule_options(args) -> dict:
    """The branching and sampling options `generate` and `eval` share, as keyword arguments."""
    return {
        "theta": args.theta,
        "dynamic_theta": args.dynamic_theta,
        "window": args.window,
        "entropy": args.entropy,
        "entropy_top_k": args.entropy_top_k,
        "end_of_thinking": args.end_of_thinking,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "chat": not args.raw_prompt,
    }


def cmd_generate(args) -> int:
    from eager.api import generate

    prompts = _read_prompts(args)
    bar, on_step = _progress(len(prompts))
    try:
        results = generate(
            prompts,
            model=args.model,
            method=args.method,
            M=args.M,
            **_rule_options(args),
            ctx=args.ctx,
            threads=args.threads,
            on_step=on_step,
        )
    finally:
        bar.close()
    if args.json:
        payload = [r.to_dict() for r in results]
        print(json.dumps(payload[0] if len(payload) == 1 else {"results": payload}, ensure_ascii=False))
    else:
        for result in results:
            print(render_tree(result))
    return 0


def _one_line(text: str, width: int = 400) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def render_tree(result) -> str:
    """The human view: each branch, where it forked and the entropy there."""
    forks = {f.child: f for f in result.forks}
    lines = [f"prompt ({result.prompt_tokens} tokens, {result.method}): {_one_line(result.prompt, 120)}"]
    for seq in result.sequences:
        depth = 0
        parent = seq.parent
        while parent is not None:
            depth += 1
            parent = result.sequences[parent].parent
        indent = "  " * depth
        if seq.parent is None:
            origin = "root"
            shown = seq.text
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


# -- eval and report --------------------------------------------------------------------


def _budgets(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise EagerError(f"-M must be an integer or a comma list like 4,8,16, got {text!r}") from None


def eval_config(args):
    from eager.datasets import DEFAULT_TEMPLATE, load_id_file
    from eager.evaluate import EvalConfig

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
        **_rule_options(args),
        adapt_extra_factor=args.adapt_extra_factor,
        full_extra_factor=args.full_extra_factor,
        retry_decay=args.retry_decay,
        retry_late_decay=args.retry_late_decay,
        grade_timeout_s=args.grade_timeout,
        ctx=args.ctx,
        threads=args.threads,
        max_prompts_in_flight=args.max_prompts_in_flight,
    )


def _eval_progress():
    """A tqdm bar per phase: trees done, live branches, tokens/s."""
    from tqdm import tqdm

    state = {"bar": None, "phase": None}

    def on_progress(p) -> None:
        bar = state["bar"]
        if p.phase != state["phase"]:
            if bar is not None:
                bar.close()
            bar = state["bar"] = tqdm(total=p.trees_total, unit="tree", desc=p.phase, disable=None, file=sys.stderr, leave=False)
            state["phase"] = p.phase
        bar.n = p.trees_done
        bar.set_postfix(branches=p.live_branches, tok_s=f"{p.tokens_per_s:.1f}", records=p.records_written, refresh=False)
        bar.refresh()

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()

    return on_progress, close


def _print_report(out: str) -> None:
    from pathlib import Path

    from eager.report import SUMMARY_JSON, SUMMARY_MD, TRADEOFF_PNG

    path = Path(out)
    print((path / SUMMARY_MD).read_text(encoding="utf-8"))
    print(f"wrote {path / SUMMARY_JSON}, {path / SUMMARY_MD}, {path / TRADEOFF_PNG}")


def ray_options(args):
    """RayOptions when --ray is given, else None; the other --ray-* options need it."""
    from eager.distributed import RayOptions

    if args.ray is None:
        given = [name for name in ("ray_workers", "ray_cpus_per_worker") if getattr(args, name) is not None]
        if given:
            raise EagerError(f"--{given[0].replace('_', '-')} needs --ray")
        return None
    return RayOptions(address=args.ray, workers=args.ray_workers, cpus_per_worker=args.ray_cpus_per_worker, retries=args.ray_retries)


def cmd_eval(args) -> int:
    from eager.evaluate import run_eval

    config = eval_config(args)
    ray = ray_options(args)
    on_progress, close = _eval_progress()
    try:
        run_eval(config, on_progress=on_progress, ray=ray)
    finally:
        close()
    _print_report(config.out_dir)
    return 0


def cmd_report(args) -> int:
    from eager.report import write_report

    write_report(args.dir)
    _print_report(args.dir)
    return 0


# -- models -----------------------------------------------------------------------------


def cmd_models(args) -> int:
    from eager.models import list_models

    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mark = "installed" if row["installed"] else "not installed"
        default = " (default)" if row["default"] else ""
        print(f"{row['name']}{default}: {row['description']}")
        print(f"  {row['size'] / 1e6:.0f} MB, {mark}" + (f": {row['path']}" if row["path"] else f"; install with: {row['install']}"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EagerError as e:
        print(f"eager: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eager: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
