"""Shared fixtures: the real SmolLM2 backend is loaded once per test session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

N_PROBLEMS = 8  # rows of the tiny JSONL data set that the evaluation tests share


@pytest.fixture(scope="session")
def smollm():
    """A llama.cpp backend on the packaged SmolLM2-135M (fails, not skips, if missing)."""
    from eager.api import load_backend

    backend = load_backend("smollm2-135m", ctx=4096, max_sequences=32, threads=2)
    yield backend
    backend.close()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A tiny JSONL data set: ids p0..p7, questions q0..q7, answers 0, 4, 8, ..."""
    path = tmp_path / "problems.jsonl"
    rows = [{"id": f"p{i}", "question": f"q{i}", "answer": str(4 * i)} for i in range(N_PROBLEMS)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
