"""The golden cases, shared by the capture script and the golden test.

Only public entry points are used (``eager.generate``, ``run_eval``, the mock
backend), resolved by :func:`_api` so the cases outlive a change of layout.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

PROMPTS = ["what is two plus two", "name a colour", "count to five", "a b c d e f g"]
REAL_PROMPTS = ["What is 12 * 7? Answer briefly.", "Name three prime numbers."]
TIMING = ("wall_s", "latency_s")

MOCK_CASES: dict[str, dict[str, Any]] = {
    "eager_init_theta1": dict(method="eager-init", M=6, theta=1.0, max_tokens=48, seed=0),
    "eager_init_fixed_window3": dict(method="eager-init", M=8, theta=2.0, dynamic_theta=False, window=3, max_tokens=48, seed=1),
    "parallel_M4": dict(method="parallel", M=4, max_tokens=40, seed=2),
    "full_entropy_greedy": dict(method="eager-init", M=5, theta=2.0, entropy="full", temperature=0.0, max_tokens=40, seed=3),
    "top_p_top_k": dict(method="eager-init", M=8, theta=1.5, temperature=1.0, top_p=0.9, top_k=5, max_tokens=48, seed=7),
    "small_cache": dict(method="parallel", M=8, max_tokens=60, seed=4, _n_ctx=200),
}
REAL_CASES: dict[str, dict[str, Any]] = {
    "eager_init": dict(method="eager-init", M=4, theta=1.0, max_tokens=32, seed=0),
    "parallel": dict(method="parallel", M=3, max_tokens=24, seed=5),
}


def _first(*names: str):
    """The first importable ``module:attribute`` of several spellings (old and new layout)."""
    for name in names:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {names} found")


def _strip(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in TIMING}


def generate_case(kw: dict[str, Any], *, real: bool) -> list[dict[str, Any]]:
    import eager

    kw = dict(kw)
    n_ctx = kw.pop("_n_ctx", 4096)
    if real:
        results = eager.generate(REAL_PROMPTS, model="smollm2-135m", ctx=4096, threads=2, **kw)
    else:
        MockBackend = _first("eager.backends.mock:MockBackend")
        results = eager.generate(PROMPTS, backend=MockBackend(32, n_ctx=n_ctx), **kw)
    return [_strip(r.to_dict()) for r in results]


def contains_q(problem, text: str) -> bool:
    """A fake reward: the mock's letter soup is 'correct' when it holds a q."""
    return "q" in text


def eval_case(tmp: Path) -> dict[str, list[dict[str, Any]]]:
    EvalConfig = _first("eager.eval:EvalConfig", "eager.evaluate:EvalConfig")
    run_eval = _first("eager.eval:run_eval", "eager.evaluate:run_eval")
    MockBackend = _first("eager.backends.mock:MockBackend")
    dataset = tmp / "problems.jsonl"
    rows = [{"id": f"p{i}", "question": f"q{i}", "answer": str(4 * i)} for i in range(8)]
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    make = getattr(EvalConfig, "of", EvalConfig)
    config = make(
        out_dir=str(tmp / "out"), dataset=str(dataset), model="mock", M=(4,), theta=2.98, dynamic_theta=False,
        max_tokens=40, template="{question}", methods=("parallel", "eager-init", "eager-adapt", "eager"),
    )
    run_eval(config, backend=MockBackend(), verifier=contains_q)
    out = {}
    for method in config.methods:
        lines = (tmp / "out" / f"{method}.jsonl").read_text().splitlines()
        out[method] = sorted((_strip(json.loads(line)) for line in lines), key=lambda r: (r["id"], r["M"]))
    return out
