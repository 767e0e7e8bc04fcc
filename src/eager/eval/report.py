"""The report of an eval run, rebuilt from its records alone.

``write_report(DIR)`` reads DIR/config.json and DIR/<method>.jsonl and writes

* summary.json: {"model", "dataset", "n_prompts", "seed", "extract", "M", "config",
  "methods"}, where "extract" is the answer extraction mode the records were graded
  under ("boxed" or "lenient"; a run from before the modes: "lenient") and "methods"
  maps a method name (one M in the run) or "<method>@M=<M>" (several) to
  ``eager.eval.metrics.summarize`` of its records (Cons@k with Math-Verify's
  equivalence and the exact-string Cons@k) plus "method", "M" and
  "tokens_saved_vs_parallel" (1 - generated / parallel's generated at the same M,
  None without parallel records for the same prompts);
* summary.md: the same as a table;
* tradeoff.png: Pass@k against generated tokens, one curve per method across M.

Nothing here generates or grades: ``eager report DIR`` re-renders a finished or
interrupted run as it stands.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from eager.errors import EagerError
from eager.eval.config import with_legacy_values
from eager.eval.grading import AnswerEquivalence
from eager.eval.methods import EVAL_METHODS, method_order
from eager.eval.metrics import summarize

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
TRADEOFF_PNG = "tradeoff.png"

# How each extraction mode is stated in summary.md.
EXTRACTION_TEXT = {
    "boxed": "the last \\boxed{} of a sequence only (an unboxed or truncated sequence is wrong), as the paper",
    "lenient": "the last \\boxed{}, else the text after \"answer is\", else the last number",
}


# -- reading ----------------------------------------------------------------------------


RECORD_FIELDS = {"id": (str, int), "M": (int,)}  # what every record and journal line must carry


def read_jsonl(path: Path, required: dict[str, tuple[type, ...]] | None = None) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; every problem is reported as FILE:LINE.

    A last line without its newline is kept when it parses completely (the
    write finished, the newline did not) and ignored when it does not (the
    write was cut). ``required`` names fields each record must have, with
    their types.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise EagerError(f"cannot read {path}: {error.strerror or error}") from None
    lines = data.split(b"\n")
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            if number == len(lines):  # no newline after it: the write was cut short
                log.warning("%s:%d: ignoring a truncated last line", path, number)
                continue
            raise EagerError(f"{path}:{number}: not a valid JSON record (UTF-8 JSON); the file is damaged") from None
        if not isinstance(record, dict):
            raise EagerError(f"{path}:{number}: expected a JSON object")
        _check_fields(record, required or {}, path, number)
        records.append(record)
    return records


def _check_fields(record: dict[str, Any], required: dict[str, tuple[type, ...]], path: Path, number: int) -> None:
    for name, types in required.items():
        value = record.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            wanted = " or ".join(t.__name__ for t in types)
            raise EagerError(f"{path}:{number}: the record's {name!r} must be {wanted}, got {value!r:.40}")


def load_config(out: Path) -> dict[str, Any]:
    path = out / CONFIG_FILE
    if not path.is_file():
        raise EagerError(f"{out} is not an eval directory: no {CONFIG_FILE}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EagerError(f"cannot read {path}: {error}") from None


def load_records(out: Path, method: str) -> list[dict[str, Any]]:
    if method not in EVAL_METHODS:  # a name read from config.json becomes a file name: only known ones
        raise EagerError(f"{out / CONFIG_FILE} lists an unknown method {method!r}; known: {', '.join(EVAL_METHODS)}")
    path = out / f"{method}.jsonl"
    return read_jsonl(path, RECORD_FIELDS) if path.exists() else []


# -- the summary ------------------------------------------------------------------------


def method_key(method: str, M: int, several: bool) -> str:
    return f"{method}@M={M}" if several else method


def build_summary(config: dict[str, Any], records: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Summaries per method and M from the records; ``records`` maps method -> its records."""
    budgets = [int(m) for m in config.get("M", [])] or sorted({int(r["M"]) for rs in records.values() for r in rs})
    several = len(budgets) > 1
    equivalent = AnswerEquivalence()  # one parse cache for every method's answers
    methods: dict[str, Any] = {}
    for M in budgets:
        by_method = {m: [r for r in rs if int(r["M"]) == M] for m, rs in records.items()}
        parallel = by_method.get("parallel", [])
        for method in sorted(by_method, key=method_order):
            own = by_method[method]
            summary = summarize(own, equivalent)
            summary = {"method": method, "M": M, **summary, "tokens_saved_vs_parallel": _saved(own, parallel)}
            methods[method_key(method, M, several)] = summary
    ids = {r["id"] for rs in records.values() for r in rs}
    return {
        "model": config.get("model"),
        "dataset": config.get("dataset"),
        "n_prompts": config.get("n_problems", len(ids)),
        "seed": config.get("seed"),
        "extract": with_legacy_values(config)["extract"],
        "M": budgets,
        "config": config,
        "methods": methods,
    }


def _saved(records: list[dict[str, Any]], parallel: list[dict[str, Any]]) -> float | None:
    """Fraction of parallel sampling's generated tokens this method did not need, same prompts only."""
    ids = {r["id"] for r in records}
    if not records or ids != {r["id"] for r in parallel}:
        return None
    baseline = sum(r["generated_tokens"] for r in parallel)
    return 1.0 - sum(r["generated_tokens"] for r in records) / baseline if baseline else None


# -- rendering --------------------------------------------------------------------------


def render_markdown(summary: dict[str, Any]) -> str:
    config = summary["config"]
    n = summary["n_prompts"]
    lines = [
        f"# EAGER evaluation: {summary['model']} on {summary['dataset']}",
        "",
        f"{n} prompts; M = {', '.join(map(str, summary['M']))}; theta = {config.get('theta')}; "
        f"temperature = {config.get('temperature')}; max tokens = {config.get('max_tokens')}; seed = {summary['seed']}.",
        f"Answers (extract = {summary['extract']}): {EXTRACTION_TEXT.get(summary['extract'], summary['extract'])}; "
        "graded for equivalence by Math-Verify.",
        "Pass@k: a prompt is solved if any of its sequences is correct. Generated tokens count a shared prefix once.",
        "Cons@k: majority vote, answers Math-Verify finds equal are one vote (a tie goes to the answer seen first); "
        "Cons@k exact: the vote over the answers as written (lower-cased, spaces removed).",
        "",
        "| method | M | Pass@k | pass rate | Cons@k | Cons@k exact | generated tokens | saved vs parallel | sequences | ended by length | preemptions | wall-clock s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["methods"].values():
        name = row["method"] if row["n_prompts"] == n else f"{row['method']} ({row['n_prompts']}/{n} prompts)"
        saved = "-" if row["tokens_saved_vs_parallel"] is None else f"{100 * row['tokens_saved_vs_parallel']:.1f}%"
        lines.append(
            f"| {name} | {row['M']} | {row['pass_at_k']:.3f} | {row['pass_rate']:.3f} | {row['cons_at_k']:.3f} "
            f"| {row['cons_at_k_exact']:.3f} | {row['generated_tokens']} | {saved} | {row['sequences']} "
            f"| {100 * row.get('length_share', 0.0):.0f}% | {row.get('preemptions', 0)} | {row['wall_s']:.2f} |"
        )
    ks = sorted({int(k) for row in summary["methods"].values() for k in row["unbiased_pass_at_k"]})
    if ks:
        lines += ["", "Unbiased pass@k (Chen et al. 2021; k up to the fewest sequences of any prompt):", ""]
        lines.append("| method | M | " + " | ".join(f"k={k}" for k in ks) + " |")
        lines.append("|---|---:|" + "---:|" * len(ks))
        for row in summary["methods"].values():
            cells = [f"{row['unbiased_pass_at_k'][str(k)]:.3f}" if str(k) in row["unbiased_pass_at_k"] else "-" for k in ks]
            lines.append(f"| {row['method']} | {row['M']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _token_label(x: float, _position=None) -> str:
    """300, 1.5k, 2M: readable token counts on the x axis."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


def plot_tradeoff(summary: dict[str, Any], path: Path) -> None:
    """Pass@k against generated tokens; one curve per method through its M values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    curves: dict[str, list[dict[str, Any]]] = {}
    for row in summary["methods"].values():
        if row["n_prompts"]:
            curves.setdefault(row["method"], []).append(row)
    # (colour, marker, size): later methods drawn smaller, so coinciding points stay visible
    style = {
        "parallel": ("tab:gray", "s", 10),
        "eager-init": ("tab:blue", "o", 8.5),
        "eager-adapt": ("tab:orange", "^", 7),
        "eager": ("tab:green", "D", 5.5),
    }
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=150)
    xs = []
    for method in sorted(curves, key=method_order):
        rows = sorted(curves[method], key=lambda r: r["M"])
        color, marker, size = style.get(method, ("tab:purple", "v", 6))
        x = [r["generated_tokens"] for r in rows]
        y = [r["pass_at_k"] for r in rows]
        xs += x
        ax.plot(x, y, color=color, marker=marker, markersize=size, markeredgecolor="white", linewidth=1.8, label=method, zorder=3)
        for r, xi, yi in zip(rows, x, y):
            ax.annotate(f"M={r['M']}", (xi, yi), textcoords="offset points", xytext=(5, 6), fontsize=7, color=color)
    positive = [x for x in xs if x > 0]
    if positive and max(positive) / min(positive) > 5:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(_token_label))
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("generated tokens (shared prefixes counted once)")
    ax.set_ylabel("Pass@k (any sequence correct)")
    dataset = Path(str(summary["dataset"])).name
    ax.set_title(f"Accuracy vs cost: {summary['model']} on {dataset} ({summary['n_prompts']} prompts)", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    if curves:
        ax.legend(title="method", loc="best", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- entry point ------------------------------------------------------------------------


def write_report(out: str | Path) -> dict[str, Any]:
    """Re-render summary.json, summary.md and tradeoff.png from DIR's records; returns the summary.

    The methods reported are the ones the run (or its later additions) asked for,
    as config.json lists them.
    """
    out = Path(out)
    config = load_config(out)
    methods = config.get("methods", [])
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise EagerError(f"{out / CONFIG_FILE}: 'methods' must be a list of method names")
    records = {method: load_records(out, method) for method in methods}
    summary = build_summary(config, records)
    _write_text(out / SUMMARY_JSON, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    _write_text(out / SUMMARY_MD, render_markdown(summary))
    plot_tradeoff(summary, out / TRADEOFF_PNG)
    return summary


def _write_text(path: Path, text: str) -> None:
    if path.is_symlink():
        raise EagerError(f"refusing to write through a symbolic link: {path}")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise EagerError(f"cannot write {path}: {error.strerror or error}") from None
