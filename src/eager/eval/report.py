"""The report of an eval run, rebuilt from its records alone.

``write_report(DIR)`` reads DIR/config.json and DIR/<method>.jsonl and writes

* summary.json: {"model", "dataset", "n_prompts", "seed", "extract", "M", "intervals",
  "run", "reallocation", "config", "methods"} (and "grading" for a code run, whose
  rows have no Cons@k: ``eager.eval.code_report``), where "extract" is the answer
  extraction mode the records were graded under ("boxed" or "lenient"; a run from
  before the modes: "lenient"); "intervals" says how the 95% intervals were made;
  "run" is the run's elapsed time from DIR/sessions.jsonl (None for a run from
  before it was recorded); "reallocation" maps "M=<M>" to the budget eager-init
  saved and what eager-adapt and eager did with it; and "methods" maps a method
  name (one M in the run) or "<method>@M=<M>" (several) to
  ``eager.eval.metrics.summarize`` of its records (with bootstrap intervals) plus
  "method", "M", "tokens_saved_vs_parallel" (1 - generated / parallel's generated
  at the same M, None without parallel records for the same prompts) and
  "vs_parallel" (every method but parallel: ``eager.eval.metrics.paired_differences``
  from parallel at the same M, None without parallel records);
* summary.md: the same as tables, k stated in every header;
* tradeoff.png: Pass@k with its interval against generated tokens, one curve per
  method across M.

Nothing here generates or grades: ``eager report DIR`` re-renders a finished or
interrupted run as it stands.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from eager.errors import EagerError
from eager.eval.budget import ReallocationConfig, saved_budget
from eager.eval.code_report import GRADING as CODE_GRADING, code_row, is_code_run, render_code_markdown
from eager.eval.config import with_legacy_values
from eager.eval.grading import AnswerEquivalence
from eager.eval.methods import EVAL_METHODS, INIT_METHOD, REALLOCATION_METHODS, method_order
from eager.eval.plot import plot_tradeoff
from eager.eval.report_lines import k_labels, reallocation_lines, run_line, unbiased_table, with_blank_before
from eager.view import write_run_index
from eager.eval.metrics import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    LEVEL,
    PromptScore,
    paired_differences,
    score_records,
    summarize_scores,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
TRADEOFF_PNG = "tradeoff.png"
SESSIONS_FILE = "sessions.jsonl"  # one line per run session that generated: its start, end and elapsed time
BASELINE = "parallel"

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


def build_summary(config: dict[str, Any], records: dict[str, list[dict[str, Any]]], sessions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Summaries per method and M from the records; ``records`` maps method -> its records,
    ``sessions`` are the lines of DIR/sessions.jsonl (None: not recorded)."""
    budgets = [int(m) for m in config.get("M", [])] or sorted({int(r["M"]) for rs in records.values() for r in rs})
    several = len(budgets) > 1
    equivalent = AnswerEquivalence()  # one parse cache for every method's answers
    code = is_code_run(config)  # graded by running tests: no Cons@k (eager.eval.code_report)
    methods: dict[str, Any] = {}
    reallocation: dict[str, Any] = {}
    for M in budgets:
        by_method = {m: [r for r in rs if int(r["M"]) == M] for m, rs in records.items()}
        scores = {m: score_records(rs, equivalent) for m, rs in by_method.items()}
        for method in sorted(by_method, key=method_order):
            row = _method_summary(method, M, by_method, scores)
            methods[method_key(method, M, several)] = code_row(row, by_method[method]) if code else row
        moved = reallocation_at(config, by_method, M)
        if moved is not None:
            reallocation[f"M={M}"] = moved
    ids = {r["id"] for rs in records.values() for r in rs}
    return {
        "model": config.get("model"),
        "dataset": config.get("dataset"),
        "n_prompts": config.get("n_problems", len(ids)),
        "seed": config.get("seed"),
        "extract": with_legacy_values(config)["extract"],
        "M": budgets,
        "intervals": INTERVALS,
        "run": run_time(sessions),
        "reallocation": reallocation,
        "config": config,
        "methods": methods,
        **({"grading": CODE_GRADING} if code else {}),
    }


# How summary.json's intervals were made (summary["intervals"]).
INTERVALS = {
    "level": LEVEL,
    "method": "percentile bootstrap over prompts",
    "resamples": BOOTSTRAP_RESAMPLES,
    "seed": BOOTSTRAP_SEED,
    "differences": f"paired: each resample draws the same prompts for a method and {BASELINE}",
}


def _method_summary(method: str, M: int, records: dict[str, list[dict[str, Any]]], scores: dict[str, list[PromptScore]]) -> dict[str, Any]:
    own, baseline = records[method], records.get(BASELINE, [])
    summary = {"method": method, "M": M, **summarize_scores(scores[method]), "tokens_saved_vs_parallel": _saved(own, baseline)}
    if method != BASELINE:
        summary["vs_parallel"] = paired_differences(scores[method], scores[BASELINE]) if baseline else None
    return summary


# -- reallocation: what eager-adapt and eager had to move --------------------------------


def reallocation_at(config: dict[str, Any], records: dict[str, list[dict[str, Any]]], M: int) -> dict[str, Any] | None:
    """The budget R = M x prompts - sequences that eager-init left at M, and how many extra
    sequences each reallocation method's plan gives to how many prompts. None when no
    reallocation method ran or eager-init has not finished every prompt."""
    wanted = [m for m in REALLOCATION_METHODS if m in records]
    init = records.get(INIT_METHOD, [])
    n_prompts = config.get("n_problems")
    if not wanted or not init or (n_prompts is not None and len(init) != n_prompts):
        return None
    counts = [len(r["sequences"]) for r in init]
    settings = ReallocationConfig(**{k: v for k, v in config.items() if k in ReallocationConfig.__dataclass_fields__})
    moved: dict[str, Any] = {"saved": saved_budget(counts, M), "init_sequences": sum(counts), "budget": M * len(counts)}
    for method in wanted:
        plan = EVAL_METHODS[method].plan(init, M, settings)
        cap = EVAL_METHODS[method].extra_factor(settings) * M
        moved[method] = {"extra_sequences": sum(plan.values()), "hard_prompts": len(plan), "cap_per_prompt": cap}
    return moved


# -- the run's elapsed time -----------------------------------------------------------------


def run_time(sessions: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The run's elapsed time over its sessions (a resumed run has several); None if not recorded."""
    if not sessions:
        return None
    return {
        "elapsed_s": sum(float(s.get("elapsed_s", 0.0)) for s in sessions),
        "sessions": len(sessions),
        "interrupted_sessions": sum(1 for s in sessions if s.get("interrupted")),
        "started_utc": sessions[0].get("started_utc"),
        "finished_utc": sessions[-1].get("finished_utc"),
    }


def _saved(records: list[dict[str, Any]], parallel: list[dict[str, Any]]) -> float | None:
    """Fraction of parallel sampling's generated tokens this method did not need, same prompts only."""
    ids = {r["id"] for r in records}
    if not records or ids != {r["id"] for r in parallel}:
        return None
    baseline = sum(r["generated_tokens"] for r in parallel)
    return 1.0 - sum(r["generated_tokens"] for r in records) / baseline if baseline else None


# -- rendering --------------------------------------------------------------------------


def _theta_source(config: dict[str, Any]) -> str:
    """Where theta came from, when it was not given on the command line."""
    source = config.get("theta_source")
    return f" ({source})" if source and source != "given" else ""


def render_markdown(summary: dict[str, Any]) -> str:
    if "grading" in summary:
        return render_code_markdown(summary)
    config = summary["config"]
    rows = list(summary["methods"].values())
    label = k_labels(rows)
    lines = [
        f"# EAGER evaluation: {summary['model']} on {summary['dataset']}",
        "",
        f"{summary['n_prompts']} prompts; M = {', '.join(map(str, summary['M']))}; theta = {config.get('theta')}{_theta_source(config)}; "
        f"temperature = {config.get('temperature')}; max tokens = {config.get('max_tokens')}; seed = {summary['seed']}.",
        f"Answers (extract = {summary['extract']}): {EXTRACTION_TEXT.get(summary['extract'], summary['extract'])}; "
        "graded for equivalence by Math-Verify.",
        f"{label['pass']}: a prompt is solved if any of its {label['k']} sequences is correct. "
        "Generated tokens count a shared prefix once.",
        f"{label['cons']}: majority vote, answers Math-Verify finds equal are one vote (a tie goes to the answer seen first); "
        f"{label['cons']} exact: the vote over the answers as written (lower-cased, spaces removed).",
        f"[low, high]: {100 * LEVEL:.0f}% percentile bootstrap interval over the prompts "
        f"({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}).",
        run_line(summary.get("run")),
        "Engine time share s: each prompt's share of the engine's time, summed over the method's prompts; "
        "the methods decode together and eager-adapt and eager include their eager-init trees, so these shares are "
        "not elapsed times and overlap.",
        "",
        *_main_table(rows, label, summary["n_prompts"]),
        *_difference_table(rows, label),
        *with_blank_before(reallocation_lines(summary)),
        *unbiased_table(rows),
    ]
    return "\n".join(lines) + "\n"


def _interval(value: float, bounds: list[float] | None, sign: str = "") -> str:
    if bounds is None:
        return f"{value:{sign}.3f}"
    return f"{value:{sign}.3f} [{bounds[0]:{sign}.3f}, {bounds[1]:{sign}.3f}]"


def _k_cell(row: dict[str, Any]) -> str:
    k = row["k"]
    return str(k["min"]) if k["min"] == k["max"] else f"{k['min']}-{k['max']} (mean {k['mean']:.1f})"


def _main_table(rows: list[dict[str, Any]], label: dict[str, str], n: int) -> list[str]:
    k_column = "" if label["fixed"] else " k = sequences per prompt |"
    lines = [
        f"| method | M |{k_column} {label['pass']} | pass rate | {label['cons']} | {label['cons']} exact | generated tokens "
        "| saved vs parallel | sequences | ended by length | preemptions | engine time share s |",
        "|---|---:|" + ("---:|" if k_column else "") + "---:|" * 10,
    ]
    for row in rows:
        name = row["method"] if row["n_prompts"] == n else f"{row['method']} ({row['n_prompts']}/{n} prompts)"
        saved = "-" if row["tokens_saved_vs_parallel"] is None else f"{100 * row['tokens_saved_vs_parallel']:.1f}%"
        ci = row["intervals"]
        k_cell = "" if label["fixed"] else f" {_k_cell(row)} |"
        lines.append(
            f"| {name} | {row['M']} |{k_cell} {_interval(row['pass_at_k'], ci['pass_at_k'])} "
            f"| {_interval(row['pass_rate'], ci['pass_rate'])} | {_interval(row['cons_at_k'], ci['cons_at_k'])} "
            f"| {row['cons_at_k_exact']:.3f} | {row['generated_tokens']} | {saved} | {row['sequences']} "
            f"| {100 * row.get('length_share', 0.0):.0f}% | {row.get('preemptions', 0)} | {row['engine_time_share_s']:.2f} |"
        )
    return lines


def _difference_table(rows: list[dict[str, Any]], label: dict[str, str]) -> list[str]:
    compared = [row for row in rows if row.get("vs_parallel")]
    if not compared:
        return []
    lines = [
        "",
        f"Difference from {BASELINE} at the same M, on the prompts both have; [low, high]: {100 * LEVEL:.0f}% paired "
        "bootstrap interval (each resample draws the same prompts for both methods):",
        "",
        f"| method | M | prompts | {label['pass']} | pass rate | {label['cons']} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in compared:
        d = row["vs_parallel"]
        cells = [_interval(d[key]["difference"], d[key]["ci95"], "+") for key in ("pass_at_k", "pass_rate", "cons_at_k")]
        lines.append(f"| {row['method']} | {row['M']} | {d['n_prompts']} | " + " | ".join(cells) + " |")
    return lines


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
    sessions_path = out / SESSIONS_FILE
    sessions = read_jsonl(sessions_path) if sessions_path.exists() else None
    summary = build_summary(config, records, sessions)
    _write_text(out / SUMMARY_JSON, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    _write_text(out / SUMMARY_MD, render_markdown(summary) + "\nEvery prompt's trees, method by method: [index.html](index.html)\n")
    write_run_index(out)
    plot_tradeoff(summary, out / TRADEOFF_PNG, pass_label=k_labels(list(summary["methods"].values()))["pass"])
    return summary


def _write_text(path: Path, text: str) -> None:
    if path.is_symlink():
        raise EagerError(f"refusing to write through a symbolic link: {path}")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise EagerError(f"cannot write {path}: {error.strerror or error}") from None
