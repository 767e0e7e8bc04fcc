"""`eager bench --serve`'s measurement, on the mock backend: every row measured, parallel shares nothing."""

from __future__ import annotations

from eager.backends.mock import MockBackend
from eager.bench.serve import Load, measure_serving, serve_markdown, serve_plot
from serve_helpers import fixed_theta


def test_serving_is_measured_for_each_method_and_client_count(tmp_path):
    load = Load(clients=(1, 3), requests_per_client=1, n=4, max_tokens=16, prompts=("two", "plus", "two"))  # the mock ends long prompts at once
    rows = measure_serving(MockBackend(), "mock", load=load, theta_for=fixed_theta)
    assert [(r["method"], r["clients"]) for r in rows] == [("eager-init", 1), ("eager-init", 3), ("parallel", 1), ("parallel", 3)]
    for r in rows:
        assert r["requests"] == r["clients"] and r["tokens_per_s"] > 0 and 0 <= r["ttft_p50_s"] <= r["latency_p50_s"] <= r["latency_p95_s"]
    parallel = [r for r in rows if r["method"] == "parallel"]
    assert all(r["computed_tokens"] == r["sequence_tokens"] and r["choices_per_request"] == 4 for r in parallel)
    assert any(r["computed_tokens"] < r["sequence_tokens"] for r in rows if r["method"] == "eager-init")
    out = {"model": "mock", "theta": 1.0, "theta_source": "given", "load": load.__dict__, "rows": rows}
    table = serve_markdown(out)
    assert table.count("| eager-init |") == 2 and table.count("| parallel |") == 2
    serve_plot(out, tmp_path / "serve.png")  # what --serve --plot draws
    assert (tmp_path / "serve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "serve.png").stat().st_size > 10_000
