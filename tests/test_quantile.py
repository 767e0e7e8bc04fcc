"""The running percentile equals np.percentile bit for bit, at every length."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eager.core.quantile import RunningPercentile


@pytest.mark.parametrize("percent", [99.0, 50.0, 90.0, 0.0, 100.0])
def test_running_percentile_equals_numpy_after_every_addition(percent):
    rng = np.random.default_rng(int(percent))
    values = np.concatenate([rng.uniform(0, 3, 300), rng.choice([0.5, 1.0, 2.0], 200)])
    running = RunningPercentile(percent)
    for n, value in enumerate(values, start=1):
        running.add(value)
        assert running.value() == np.percentile(values[:n], percent)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), min_size=1, max_size=120))
def test_running_p99_matches_numpy_for_any_history(values):
    running = RunningPercentile(99)
    running.extend(values)
    assert running.value() == np.percentile(values, 99)


def test_an_empty_history_has_no_percentile():
    with pytest.raises(ValueError):
        RunningPercentile().value()
