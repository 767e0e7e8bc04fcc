"""The report of a code run: Pass@k, the unbiased pass@k and why programs failed; no Cons@k.

A code sequence has no single answer to vote on, so Cons@k is not defined:
summary.json says so (``"cons_at_k": null`` and the top-level "grading" note)
and summary.md leaves it out instead of printing 0. The unbiased pass@k of Chen
et al. (2021) is reported for k = 1, 2, 4, 8 (those no larger than the fewest
sequences of any prompt), and each method's failures are counted by reason
(:data:`eager.eval.sandbox.REASONS`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from eager.eval.code import CodeVerifier
from eager.eval.datasets import CODE_DATASETS
from eager.eval.report_lines import k_labels, reallocation_lines, run_line, unbiased_table, with_blank_before
from eager.eval.metrics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, LEVEL
from eager.eval.sandbox import REASONS

CODE_KS = ("1", "2", "4", "8")
CONS_NOTE = "Cons@k is not defined for code (a program has no single answer to vote on); not reported"
GRADING = {
    "what": "execution: a sequence is correct when the problem's tests pass on its code",
    "cons_at_k": CONS_NOTE,
}


def is_code_run(config: dict[str, Any]) -> bool:
    """A run graded by executing code: the code verifier's label, or a code data set."""
    return config.get("verifier") == CodeVerifier.label or config.get("dataset") in CODE_DATASETS


def code_row(row: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """A method's summary for code: no Cons@k, unbiased pass@k at k <= 8, failures by reason."""
    row = dict(row, cons_at_k=None, cons_at_k_exact=None)
    row["intervals"] = dict(row["intervals"], cons_at_k=None, cons_at_k_exact=None)
    row["unbiased_pass_at_k"] = {k: v for k, v in row["unbiased_pass_at_k"].items() if k in CODE_KS}
    if row.get("vs_parallel"):
        row["vs_parallel"] = {k: v for k, v in row["vs_parallel"].items() if k not in ("cons_at_k", "cons_at_k_exact")}
    row["failures"] = failure_counts(records)
    return row


def failure_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """How many sequences passed, and how many failed for each reason (zeros left out)."""
    counts = Counter("passed" if s.get("correct") else s.get("reason") or "unknown" for r in records for s in r["sequences"])
    order = ["passed", *REASONS, "unknown"]
    return {reason: counts[reason] for reason in order if counts[reason]}


def render_code_markdown(summary: dict[str, Any]) -> str:
    config = summary["config"]
    rows = list(summary["methods"].values())
    label = k_labels(rows)
    sandbox = "WITHOUT a sandbox (--unsafe-exec: rlimits only)" if config.get("unsafe_exec") else "in a bubblewrap sandbox"
    lines = [
        f"# EAGER evaluation: {summary['model']} on {summary['dataset']}",
        "",
        f"{summary['n_prompts']} prompts; M = {', '.join(map(str, summary['M']))}; theta = {config.get('theta')}; "
        f"temperature = {config.get('temperature')}; max tokens = {config.get('max_tokens')}; seed = {summary['seed']}.",
        f"Grading: each sequence's code (its last ```python block, else the completion after the prompt) runs with the "
        f"problem's tests {sandbox} (no network, a read-only system, a private /tmp; limits on CPU time, memory, "
        f"processes, output and wall time (--grade-timeout)); "
        "a sequence is correct when every test passes.",
        f"{label['pass']}: a prompt is solved if any of its {label['k']} sequences passes; pass rate: passing sequences / sequences. "
        "Generated tokens count a shared prefix once.",
        f"{CONS_NOTE}.",
        f"[low, high]: {100 * LEVEL:.0f}% percentile bootstrap interval over the prompts "
        f"({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}).",
        run_line(summary.get("run")),
        "",
        *_table(rows, label, summary["n_prompts"]),
        *_difference_table(rows, label),
        *with_blank_before(reallocation_lines(summary)),
        *unbiased_table(rows),
        *_failure_table(rows),
    ]
    return "\n".join(lines) + "\n"


def _cell(value: float, bounds: list[float] | None, sign: str = "") -> str:
    return f"{value:{sign}.3f}" if bounds is None else f"{value:{sign}.3f} [{bounds[0]:{sign}.3f}, {bounds[1]:{sign}.3f}]"


def _table(rows: list[dict[str, Any]], label: dict[str, str], n: int) -> list[str]:
    lines = [
        f"| method | M | k | {label['pass']} | pass rate | generated tokens | saved vs parallel | sequences | ended by length | engine time share s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = row["method"] if row["n_prompts"] == n else f"{row['method']} ({row['n_prompts']}/{n} prompts)"
        saved = "-" if row["tokens_saved_vs_parallel"] is None else f"{100 * row['tokens_saved_vs_parallel']:.1f}%"
        k = row["k"]
        k_cell = str(k["min"]) if k["min"] == k["max"] else f"{k['min']}-{k['max']} (mean {k['mean']:.1f})"
        ci = row["intervals"]
        lines.append(
            f"| {name} | {row['M']} | {k_cell} | {_cell(row['pass_at_k'], ci['pass_at_k'])} | {_cell(row['pass_rate'], ci['pass_rate'])} "
            f"| {row['generated_tokens']} | {saved} | {row['sequences']} | {100 * row.get('length_share', 0.0):.0f}% "
            f"| {row['engine_time_share_s']:.2f} |"
        )
    return lines


def _difference_table(rows: list[dict[str, Any]], label: dict[str, str]) -> list[str]:
    compared = [row for row in rows if row.get("vs_parallel")]
    if not compared:
        return []
    lines = ["", f"Difference from parallel at the same M, on the prompts both have (paired {100 * LEVEL:.0f}% bootstrap interval):", ""]
    lines += [f"| method | M | prompts | {label['pass']} | pass rate |", "|---|---:|---:|---:|---:|"]
    for row in compared:
        d = row["vs_parallel"]
        cells = [_cell(d[key]["difference"], d[key]["ci95"], "+") for key in ("pass_at_k", "pass_rate")]
        lines.append(f"| {row['method']} | {row['M']} | {d['n_prompts']} | " + " | ".join(cells) + " |")
    return lines


def _failure_table(rows: list[dict[str, Any]]) -> list[str]:
    reasons = [r for r in ("passed", *REASONS, "unknown") if any(r in row.get("failures", {}) for row in rows)]
    if not reasons:
        return []
    lines = ["", "Sequences by outcome (reasons: eager.eval.sandbox):", ""]
    lines += ["| method | M | " + " | ".join(reasons) + " |", "|---|---:|" + "---:|" * len(reasons)]
    for row in rows:
        lines.append(f"| {row['method']} | {row['M']} | " + " | ".join(str(row["failures"].get(r, 0)) for r in reasons) + " |")
    return lines
