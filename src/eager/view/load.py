"""Trees to view: from a ``generate --json`` file or one prompt of an eval run directory.

Every loader returns *view trees*: dicts in the shape of
``GenerationResult.to_dict()`` (``prompt``, ``method``, ``sequences``, ``forks``,
``generated_tokens``, ``sequence_tokens``), plus what a viewer may show when it
is known: ``theta``, ``title``, and per sequence ``answer`` and ``correct``.
A sequence may lack ``pieces`` and ``entropies`` (an eval run without
``--save-entropies``); a fork may lack its entropy and alternatives then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eager.errors import EagerError
from eager.files import read_lines

CONFIG_FILE = "config.json"


def load_generate_json(path: str | Path) -> list[dict[str, Any]]:
    """The trees of a ``generate --json`` output (``{"settings", "results"}``, ``{"results"}`` or one bare
    result) or of a ``generate --jsonl`` output (one ``{"settings", "result"}`` object per line)."""
    path = Path(path)
    lines = read_lines(path, "file")
    try:
        data = json.loads("\n".join(lines))
    except ValueError as error:
        if error.lineno > 1 and lines and lines[0].lstrip().startswith("{"):
            return _trees_of_jsonl(lines, path)
        raise EagerError(f"{path} is not JSON ({error.msg} at line {error.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("result"), dict):  # --jsonl with one prompt
        return _trees_of_jsonl(lines, path)
    return trees_of_generate(data, str(path))


def _trees_of_jsonl(lines: list[str], path: Path) -> list[dict[str, Any]]:
    trees = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise EagerError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("result"), dict):
            raise EagerError(f"{path}:{number}: not an `eager generate --jsonl` line (no 'result' object)")
        trees += trees_of_generate({"settings": row.get("settings"), "results": [row["result"]]}, f"{path}:{number}")
    return trees


def trees_of_generate(data: Any, where: str = "the JSON") -> list[dict[str, Any]]:
    """The trees of a parsed ``generate --json`` object (any of its shapes)."""
    if isinstance(data, dict) and isinstance(data.get("sequences"), list):
        results, settings = [data], {}
    elif isinstance(data, dict) and isinstance(data.get("results"), list):
        results, settings = data["results"], data.get("settings") or {}
    else:
        raise EagerError(f"{where} is not an `eager generate --json` output (no 'sequences' or 'results')")
    trees = []
    for i, result in enumerate(results):
        if not isinstance(result, dict) or not isinstance(result.get("sequences"), list):
            raise EagerError(f"{where}: result {i} has no 'sequences' list")
        tree = dict(result)
        tree.setdefault("theta", settings.get("theta"))
        tree.setdefault("title", f"prompt {result.get('index', i)}")
        trees.append(tree)
    return trees


# -- eval run directories ------------------------------------------------------------------


def load_run(run_dir: str | Path, problem_id: str, method: str | None = None) -> list[dict[str, Any]]:
    """One prompt's trees in an eval run: one per method (and M), or only ``method``'s."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    methods = run_methods(run_dir, config)
    if method is not None and method not in methods:
        raise EagerError(f"no records of method {method!r} in {run_dir}; available: {', '.join(methods) or 'none'}")
    trees = []
    ids: set[str] = set()
    for name in [method] if method else methods:
        for record in read_records(run_dir, name):
            ids.add(str(record.get("id")))
            if str(record.get("id")) == str(problem_id):
                trees.append(tree_of_record(record, config.get("theta")))
    if not trees:
        shown = ", ".join(sorted(ids)[:8]) + (", ..." if len(ids) > 8 else "")
        raise EagerError(f"no prompt with id {problem_id!r} in {run_dir}" + (f" ({method})" if method else "") + f"; ids: {shown or 'none'}")
    return trees


def run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not run_dir.exists():
        raise EagerError(f"no such file or directory: {run_dir}")
    if not path.is_file():
        raise EagerError(f"{run_dir} is not an eval directory: no {CONFIG_FILE}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EagerError(f"cannot read {path}: {error}") from None
    if not isinstance(config, dict):
        raise EagerError(f"{path}: expected a JSON object")
    return config


def run_methods(run_dir: Path, config: dict[str, Any]) -> list[str]:
    """The run's methods (config.json's order) that have a records file."""
    listed = config.get("methods") if isinstance(config.get("methods"), list) else []
    return [m for m in listed if isinstance(m, str) and "/" not in m and (run_dir / f"{m}.jsonl").is_file()]


def read_records(run_dir: Path, method: str) -> list[dict[str, Any]]:
    """The records of ``<method>.jsonl``; a cut last line (a run killed mid-write) is skipped."""
    path = run_dir / f"{method}.jsonl"
    lines = read_lines(path, "records file")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                continue
            raise EagerError(f"{path}:{number}: not a valid JSON record") from None
        if isinstance(record, dict) and isinstance(record.get("sequences"), list):
            records.append(record)
    return records


def tree_of_record(record: dict[str, Any], theta: float | None = None) -> dict[str, Any]:
    """An eval record as a view tree: graded sequences, forks from their parents (details if saved)."""
    sequences = [_sequence_of(i, s) for i, s in enumerate(record["sequences"])]
    forks = [_fork_of(i, s) for i, s in enumerate(record["sequences"]) if s.get("parent") is not None]
    return {
        "prompt": record.get("question", ""),
        "method": record.get("method", ""),
        "title": f"{record.get('id')} · {record.get('method')} · M={record.get('M')}",
        "id": record.get("id"),
        "M": record.get("M"),
        "gold": record.get("gold"),
        "theta": theta,
        "prompt_tokens": record.get("prompt_tokens"),
        "sequences": sequences,
        "forks": forks,
        "generated_tokens": record.get("generated_tokens"),
        "sequence_tokens": record.get("sequence_tokens"),
    }


def _sequence_of(index: int, s: dict[str, Any]) -> dict[str, Any]:
    out = {k: s.get(k) for k in ("text", "parent", "fork_at", "finish_reason", "answer", "correct", "entropies", "pieces")}
    out.update(index=index, n_tokens=s.get("n_tokens"), round=s.get("round", 0))
    return {k: v for k, v in out.items() if v is not None or k in ("parent", "fork_at", "answer")}


def _fork_of(index: int, s: dict[str, Any]) -> dict[str, Any]:
    saved = s.get("fork") or {}
    return {"position": s.get("fork_at"), **saved, "parent": s["parent"], "child": index}
