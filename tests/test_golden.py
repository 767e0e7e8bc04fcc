"""Golden outputs: fixed seeds on the mock backend and SmolLM2-135M give the records
captured before the layout moved (``tests/golden/make_golden.py`` wrote them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))

from cases import MOCK_CASES, REAL_CASES, eval_case, generate_case  # noqa: E402


def golden(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text())


@pytest.mark.parametrize("case", sorted(MOCK_CASES))
def test_mock_generation_matches_the_golden_records(case):
    assert generate_case(MOCK_CASES[case], real=False) == golden("mock_generate.json")[case]


def test_mock_evaluation_of_all_four_methods_matches_the_golden_records(tmp_path):
    assert eval_case(tmp_path) == golden("mock_eval.json")


@pytest.mark.parametrize("case", sorted(REAL_CASES))
def test_smollm_generation_matches_the_golden_records(case):
    assert generate_case(REAL_CASES[case], real=True) == golden("smollm_generate.json")[case]
