"""Shared fixtures: the real SmolLM2 backend is loaded once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm():
    """A llama.cpp backend on the packaged SmolLM2-135M (fails, not skips, if missing)."""
    from eager.api import load_backend

    backend = load_backend("smollm2-135m", ctx=4096, max_sequences=32, threads=2)
    yield backend
    backend.close()
