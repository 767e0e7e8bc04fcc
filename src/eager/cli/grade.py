"""``eager grade``: how one output is graded: the answer extracted, where it came from, the verdict."""

from __future__ import annotations

import json
import sys

from eager.cli.options import add_field_option
from eager.errors import EagerError

EPILOG = """\
The answer is extracted as `eager eval` does (--extract boxed: the last \\boxed{}
only, as the paper; lenient: else the text after "answer is", else the last
number) and compared with GOLD by Math-Verify. Its source is boxed, fallback
(lenient's "answer is" or last number) or none.

examples:
  eager grade --gold 70 "so in total we get 70"                  (no box: wrong)
  eager grade --gold 70 --extract lenient "so in total we get 70"
  eager grade --gold '\\frac{1}{2}' 'thus \\boxed{0.5}' --json
  tail -c 2000 output.txt | eager grade --gold 42 -
"""


def add_parser(sub) -> None:
    import argparse
    from dataclasses import fields

    from eager.eval.config import EvalConfig

    p = sub.add_parser(
        "grade", help="show how an output is graded: the extracted answer, its source, correct or not",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("text", metavar="TEXT", help="the model's output; - reads it from standard input")
    p.add_argument("--gold", required=True, help="the gold answer, e.g. 70 or '\\frac{1}{2}'")
    add_field_option(p, next(f for f in fields(EvalConfig) if f.name == "extract"))
    p.add_argument("--grade-timeout", type=float, default=5.0, help="seconds Math-Verify may spend (default: 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object: answer, source, correct")
    p.set_defaults(func=cmd_grade)


def _read_text(text: str) -> str:
    if text != "-":
        return text
    try:
        return sys.stdin.read()
    except (OSError, UnicodeDecodeError) as error:
        raise EagerError(f"cannot read the output from standard input: {error}") from None


def cmd_grade(args) -> int:
    from eager.eval.grading import Grader, grade

    if not args.gold.strip():
        raise EagerError("--gold is empty; give the gold answer, e.g. --gold 70")
    text = _read_text(args.text)
    answer, source, correct = grade(text, args.gold, Grader(args.grade_timeout), args.extract)
    if args.json:
        print(json.dumps({"answer": answer, "source": source, "correct": correct}, ensure_ascii=False))
        return 0
    print(f"answer:  {answer if answer is not None else '(none)'}")
    print(f"source:  {source} (--extract {args.extract})")
    print(f"correct: {'yes' if correct else 'no'} (gold: {args.gold})")
    return 0
