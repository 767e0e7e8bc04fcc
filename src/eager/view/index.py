"""An eval run's ``index.html``: per prompt, every method's tree side by side, filterable by solved."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from eager.errors import EagerError
from eager.view.html import render_run_index
from eager.view.load import read_records, run_config, run_methods, tree_of_record

INDEX_FILE = "index.html"


def run_index(run_dir: str | Path) -> list[dict[str, Any]]:
    """Per prompt, in the run's order: ``{"id", "question", "gold", "solved", "trees"}`` (a tree per method and M)."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    prompts: dict[str, dict[str, Any]] = {}
    for method in run_methods(run_dir, config):
        for record in read_records(run_dir, method):
            key = str(record.get("id"))
            entry = prompts.setdefault(key, {"id": key, "question": record.get("question", ""), "gold": record.get("gold"), "trees": []})
            entry["trees"].append(tree_of_record(record, config.get("theta")))
    for entry in prompts.values():
        entry["solved"] = any(s.get("correct") for tree in entry["trees"] for s in tree["sequences"])
    return sorted(prompts.values(), key=lambda p: _natural(p["id"]))


def _natural(text: str) -> list[Any]:
    """Sort key: "p2" before "p10"."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def write_run_index(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/index.html``; returns its path."""
    run_dir = Path(run_dir)
    path = run_dir / INDEX_FILE
    if path.is_symlink():
        raise EagerError(f"refusing to write through a symbolic link: {path}")
    page = render_run_index(run_index(run_dir), title=f"eager eval: {run_dir.name}, trees per prompt")
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as error:
        raise EagerError(f"cannot write {path}: {error.strerror or error}") from None
    return path
