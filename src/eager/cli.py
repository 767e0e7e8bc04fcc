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


def _add_generation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"packaged model name or path to a .gguf file (default: {DEFAULT_MODEL}; see `eager models`)")
    g.add_argument("--ctx", type=int, default=16384, help="KV cache cells shared by all sequences (default: 16384)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for llama.cpp (default: llama.cpp's choice)")
    g.add_argument("--raw-prompt", action="store_true", help="send the prompt as raw text, without the model's chat template")

    b = p.add_argument_group("branching (EAGER-init)")
    b.add_argument("--method", default="eager-init", help="eager-init (entropy-aware branching) or parallel (M independent samples) (default: eager-init)")
    b.add_argument("-M", "--max-sequences", dest="M", type=int, default=8, help="sequences per prompt, live and finished (default: 8)")
    b.add_argument("--theta", type=float, default=2.2, help="entropy threshold in nats for a fork (default: 2.2; the top-20 maximum is ln 20 = 3.0)")
    b.add_argument("--no-dynamic-theta", dest="dynamic_theta", action="store_false", help="use theta as is, not max(theta, running P99 of the prompt's entropies)")
    b.add_argument("--window", type=int, default=1000, help="W: no forks after this many steps in a row without one (default: 1000)")
    b.add_argument("--entropy", choices=["topk", "full"], default="topk", help="top-K renormalised entropy (paper) or exact full-vocabulary entropy (default: topk)")
    b.add_argument("--entropy-top-k", type=int, default=20, help="K for top-K entropy (default: 20)")
    b.add_argument("--end-of-thinking", default="</think>", help='a sequence forks no more after this marker (default: "</think>"; "" disables)')

    s = p.add_argument_group("sampling")
    s.add_argument("--max-tokens", type=int, default=512, help="completion tokens per sequence (default: 512)")
    s.add_argument("--temperature", type=float, default=0.6, help="sampling temperature, 0 = greedy (default: 0.6)")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0, off)")
    s.add_argument("--top-k", type=int, default=0, help="sample among the k most probable tokens (default: 0, off)")
    s.add_argument("--seed", type=int, default=0, help="run seed: the same seed reproduces the same tree (default: 0)")


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

    models = sub.add_parser("models", help="list the packaged models")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(func=cmd_models)
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
            theta=args.theta,
            dynamic_theta=args.dynamic_theta,
            window=args.window,
            entropy=args.entropy,
            entropy_top_k=args.entropy_top_k,
            end_of_thinking=args.end_of_thinking,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            max_tokens=args.max_tokens,
            seed=args.seed,
            chat=not args.raw_prompt,
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
