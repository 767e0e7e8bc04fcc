"""``eager bench``: run :func:`eager.bench.run_bench`, write FILE.json, FILE.md and a plot, print the table."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from eager.bench.config import BenchConfig
from eager.cli.generate import theta_value
from eager.cli.options import add_config_options, config_from_args
from eager.errors import EagerError

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    """Register ``eager bench`` on an argparse subparsers object."""
    p = sub.add_parser(
        "bench",
        help="measure speed: engine vs raw llama.cpp, entropy cost, EAGER vs parallel, forks, a transformers peer, scaling",
        description="Measure the engine's speed side by side with a raw llama-cpp-python loop and a transformers peer.",
    )
    p.add_argument("--out", required=True, help="write the results to FILE.json and a table to FILE.md")
    p.add_argument("--plot", default=None, help="also save a PNG: tokens/s side by side and scaling (with --serve: tokens/s, TTFT and latency against clients)")
    add_config_options(p, BenchConfig, exclude=("theta",))
    p.add_argument("--theta", type=theta_value, default=BenchConfig.theta, help=_theta_help())
    p.add_argument("--no-transformers", dest="peer", action="store_false", help="skip the transformers peer")
    p.add_argument("--serve", action="store_true", help="instead: eager serve under 1, 4, 16 concurrent clients, n = M, EAGER vs parallel (eager.bench.serve)")
    p.set_defaults(func=cmd_bench)


def _theta_help() -> str:
    from dataclasses import fields

    return next(f for f in fields(BenchConfig) if f.name == "theta").metadata["help"].replace("{default}", str(BenchConfig.theta))


def _check_writable(path: Path) -> None:
    if not path.parent.is_dir():
        raise EagerError(f"cannot write {path}: no such directory {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise EagerError(f"cannot write {path}: directory {path.parent} is not writable")


def _outputs(args) -> tuple[Path, Path]:
    """(FILE.json, FILE.md), after checking that every file to write can be written."""
    out_json = Path(args.out)
    if out_json.suffix != ".json":
        raise EagerError(f"--out must name a .json file, got {args.out}")
    for path in [out_json] + ([Path(args.plot)] if args.plot else []):
        _check_writable(path)
    return out_json, out_json.with_suffix(".md")


def _command_line() -> str:
    return "eager " + " ".join(sys.argv[1:]) if sys.argv and Path(sys.argv[0]).name == "eager" else ""


def cmd_bench(args) -> int:
    import json

    from eager.bench.render import plot, to_markdown
    from eager.bench.run import run_bench

    if args.serve:  # the server under load: same files, its own table
        from eager.bench.serve import run_serve_bench as run_bench, serve_markdown as to_markdown, serve_plot as plot  # noqa: F811

    out_json, out_md = _outputs(args)
    cfg = config_from_args(BenchConfig, args, peer=args.peer)
    out = run_bench(cfg, progress=(lambda msg: log.info("bench: %s", msg)) if args.serve else None)  # run_bench logs its own
    markdown = to_markdown(out, _command_line())
    out_json.write_text(json.dumps(out, indent=2) + "\n")
    out_md.write_text(markdown)
    if args.plot:
        plot(out, args.plot)
    print(markdown, end="")
    print(f"wrote {out_json} and {out_md}" + (f" and {args.plot}" if args.plot else ""))
    return 0
