"""``eager view``: a generate --json output or one prompt of an eval run, as a tree (terminal or HTML)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from eager.errors import EagerError

EPILOG = """\
Each branch is shown under the branch it forked from, with the entropy at the
fork against theta_eff, the two alternatives there (top-1 kept by the parent,
top-2 taken by the child), how it finished, its answer and whether it is
correct (eval runs), and its own text with tokens coloured by entropy (the
entropies are in `generate --json`; eval runs keep them with --save-entropies).

examples:
  eager generate --prompt "What is 17 * 23?" -M 8 --json > tree.json
  eager view tree.json
  eager view tree.json --html tree.html
  eager view runs/gsm8k --id 12 --method eager-init
"""


def add_parser(sub) -> None:
    p = sub.add_parser("view", help="show where a tree branched: a generate --json file or an eval run's prompt", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="FILE.json|RUN_DIR", help="an `eager generate --json` (or --jsonl) output, or an `eager eval` --out directory")
    p.add_argument("--id", default=None, help="RUN_DIR: the prompt's id")
    p.add_argument("--method", default=None, help="RUN_DIR: only this method's tree (default: every method's)")
    p.add_argument("--html", default=None, metavar="OUT.html", help="write one self-contained HTML page instead of printing")
    p.add_argument("--full", action="store_true", help="terminal: every branch's whole text (default: long texts are cut in the middle)")
    p.add_argument("--width", type=int, default=None, help="terminal width in columns (default: the terminal's)")
    p.set_defaults(func=cmd_view)


def load_trees(args) -> list[dict]:
    from eager.view import load_generate_json, load_run

    source = Path(args.source)
    if not source.exists():
        raise EagerError(f"no such file or directory: {source}")
    if source.is_dir():
        if args.id is None:
            raise EagerError(f"{source} is a directory: give the prompt with --id ID (an eval run's record id)")
        return load_run(source, args.id, args.method)
    if args.id is not None or args.method is not None:
        raise EagerError("--id and --method select a prompt of an eval run directory, not of a JSON file")
    return load_generate_json(source)


def cmd_view(args) -> int:
    from eager.view import render_html, render_terminal

    trees = load_trees(args)
    if args.html:
        out = Path(args.html)
        try:
            out.write_text(render_html(trees, title=f"eager: {Path(args.source).name}"), encoding="utf-8")
        except OSError as error:
            raise EagerError(f"cannot write {out}: {error.strerror or error}") from None
        print(f"wrote {out} ({len(trees)} tree{'s' if len(trees) != 1 else ''})")
        return 0
    width = args.width or shutil.get_terminal_size((100, 24)).columns
    print(render_terminal(trees, width=width, full=args.full), end="")
    return 0
