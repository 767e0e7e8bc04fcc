"""schemathesis over the server's own OpenAPI schema: valid and invalid requests of every route.

A bounded run on 127.0.0.1 against the mock: no answer is a 5xx, the server
stays alive, and every KV cell comes back once the requests are done.
"""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from serve_helpers import KEY, MODEL, running_server, wait_idle

EXAMPLES = 120  # about 20 s on two loaded cores


def _served_model(case):
    """A valid body names the served model (any other name is a 404 before the engine)."""
    if isinstance(case.body, dict):
        case.body["model"] = MODEL
    return case


def test_schemathesis_finds_no_server_error_and_no_leaked_cell():
    with running_server(max_tokens_limit=64, default_max_tokens=32, max_n=8) as (url, app, backend):
        schema = schemathesis.openapi.from_dict(app.openapi())
        auth = {"Authorization": f"Bearer {KEY}"}
        valid = schema.as_strategy(GenerationMode.POSITIVE, headers=auth).map(_served_model)
        cases = st.one_of(valid, schema.as_strategy(GenerationMode.NEGATIVE, headers=auth))
        statuses: list[int] = []

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(case=cases)
        def check(case):
            response = case.call(base_url=url, timeout=30)
            statuses.append(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"

        check()
        wait_idle(backend, app, timeout=10)
        health = httpx.get(url + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["kv_cells_in_use"] == 0 and health["requests_held"] == 0
    assert backend.cells_in_use == 0
    assert 200 in statuses and any(400 <= s < 500 for s in statuses)  # both kinds of request were made
