"""Capture golden outputs: fixed seeds on the mock backend and on SmolLM2-135M.

Run from the repository root: ``.venv/bin/python tests/golden/make_golden.py``.
``tests/test_golden.py`` recomputes the same cases and compares them with the
files written here, so a refactoring that changes behaviour fails loudly. A
deliberate change of behaviour regenerates them (and says why in the commit).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import MOCK_CASES, REAL_CASES, eval_case, generate_case  # noqa: E402


def main() -> None:
    out = {name: generate_case(kw, real=False) for name, kw in MOCK_CASES.items()}
    (HERE / "mock_generate.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        (HERE / "mock_eval.json").write_text(json.dumps(eval_case(Path(tmp)), indent=1, sort_keys=True) + "\n")
    out = {name: generate_case(kw, real=True) for name, kw in REAL_CASES.items()}
    (HERE / "smollm_generate.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
