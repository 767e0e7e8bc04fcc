"""Lines of summary.md that every report shares (math and code): k in the headers, the run's
elapsed time, what reallocation moved, the unbiased pass@k table."""

from __future__ import annotations

from typing import Any

from eager.eval.methods import REALLOCATION_METHODS

# Which prompts each reallocation method calls hard (the plan itself is EVAL_METHODS[m].plan).
HARD_PROMPTS = {"eager-adapt": "prompts whose eager-init tree reached M = {M}", "eager": "prompts eager-init did not solve"}


def reallocation_lines(summary: dict[str, Any]) -> list[str]:
    """One line per M saying what reallocation moved, and why nothing when it moved nothing."""
    lines = []
    for key, moved in summary.get("reallocation", {}).items():
        M = key.removeprefix("M=")
        head = f"Reallocation at M = {M}: eager-init used {moved['init_sequences']} of {moved['budget']} sequences, R = {moved['saved']}"
        if moved["saved"] <= 0:
            methods = [m for m in REALLOCATION_METHODS if m in moved]
            verb = "equals" if len(methods) == 1 else "equal"
            lines.append(f"{head}: no budget to move, because every eager-init tree reached M = {M} sequences; {' and '.join(methods)} {verb} eager-init.")
            continue
        parts = [_moved_text(method, moved[method], M, moved["saved"]) for method in REALLOCATION_METHODS if method in moved]
        lines.append(f"{head}. " + " ".join(parts))
    return lines


def _moved_text(method: str, moved: dict[str, int], M: str, saved: int) -> str:
    hard = HARD_PROMPTS.get(method, "hard prompts").format(M=M)
    if moved["hard_prompts"] == 0:
        return f"{method} moved nothing: there are no {hard}, so it equals eager-init."
    unused = saved - moved["extra_sequences"]
    capped = f" (at most {moved['cap_per_prompt']} each, so {unused} stay unused)" if unused > 0 else ""
    return f"{method} gave {moved['extra_sequences']} extra sequences to {moved['hard_prompts']} {hard}{capped}."


def k_labels(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Column names with k stated: "Pass@8" when every prompt of every row has 8 sequences,
    else "Pass@k (k = sequences of the prompt)" (and the table gets a k column)."""
    ks = {(row["k"]["min"], row["k"]["max"]) for row in rows if row["n_prompts"]}
    if len(ks) == 1 and len({*next(iter(ks))}) == 1:
        k = next(iter(ks))[0]
        return {"pass": f"Pass@{k}", "cons": f"Cons@{k}", "k": str(k), "fixed": "yes"}
    return {"pass": "Pass@k (k = sequences of the prompt)", "cons": "Cons@k", "k": "k", "fixed": ""}


def run_line(run: dict[str, Any] | None) -> str:
    if run is None:
        return "Run elapsed time: not recorded (a run from before eager logged its sessions)."
    sessions = f"{run['sessions']} session" + ("s" if run["sessions"] > 1 else "")
    if run["interrupted_sessions"]:
        sessions += f", {run['interrupted_sessions']} interrupted"
    return (
        f"Run elapsed time: {run['elapsed_s']:.1f} s ({sessions}; started {run['started_utc']}, "
        f"finished {run['finished_utc']}; loading, generation and grading, all methods together)."
    )


def with_blank_before(lines: list[str]) -> list[str]:
    return ["", *lines] if lines else []


def unbiased_table(rows: list[dict[str, Any]]) -> list[str]:
    ks = sorted({int(k) for row in rows for k in row["unbiased_pass_at_k"]})
    if not ks:
        return []
    lines = ["", "Unbiased pass@k (Chen et al. 2021; k up to the fewest sequences of any prompt):", ""]
    lines.append("| method | M | " + " | ".join(f"k={k}" for k in ks) + " |")
    lines.append("|---|---:|" + "---:|" * len(ks))
    for row in rows:
        cells = [f"{row['unbiased_pass_at_k'][str(k)]:.3f}" if str(k) in row["unbiased_pass_at_k"] else "-" for k in ks]
        lines.append(f"| {row['method']} | {row['M']} | " + " | ".join(cells) + " |")
    return lines
