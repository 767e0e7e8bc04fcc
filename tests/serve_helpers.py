"""A live `eager serve` on 127.0.0.1 (a free port, uvicorn in a background thread) for the tests."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import openai
import pytest
import uvicorn

from eager.api import ThetaChoice
from eager.backends.mock import EOG_ID, MockBackend, default_logits
from eager.serve import ServeConfig, create_app

MODEL = "mock"
KEY = "test-key-123"
THETA = 1.0  # the mock forks often at 1 nat


def fixed_theta(branching):
    return ThetaChoice(THETA, "given", "tests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(backend=None, *, api_key: str | None = KEY, **limits):
    """Yields (base URL, app, backend); the server stops on leaving."""
    backend = backend or MockBackend(n_ctx=4096)
    config = ServeConfig(port=free_port(), **limits)
    app = create_app(backend, model_name=MODEL, config=config, api_key=api_key, theta_for=fixed_theta)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}", app, backend
    finally:
        server.should_exit = True
        thread.join(20)


def wait_idle(backend, app, timeout: float = 5.0) -> None:
    """Until no request is held and no KV cell is in use (or the time-out)."""
    online = app.state.server.online
    deadline = time.monotonic() + timeout
    while (online.held or backend.cells_in_use) and time.monotonic() < deadline:
        time.sleep(0.01)


class SlowMock(MockBackend):
    """The mock whose sequences never end on their own, each step a few milliseconds long."""

    def __init__(self, **kw) -> None:
        base = default_logits(32)

        def endless(history):
            row = base(history)
            row[EOG_ID] = -50.0
            return row

        super().__init__(logits_fn=endless, **kw)

    def step(self, items):
        time.sleep(0.004)
        return super().step(items)


@pytest.fixture(scope="module")
def served():
    """A module's server on the mock: (url, app, backend)."""
    with running_server() as (url, app, backend):
        yield url, app, backend


@pytest.fixture
def client(served):
    """The official openai client pointed at ``served``."""
    return openai.OpenAI(base_url=served[0] + "/v1", api_key=KEY, max_retries=0, timeout=30)
