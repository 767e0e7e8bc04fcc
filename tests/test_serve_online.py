"""The engine's online API (add, cancel, end_branch) and the engine loop thread, on the mock backend."""

from __future__ import annotations

import queue
import time

from eager.api import run_requests
from eager.backends.mock import MockBackend
from eager.core.config import BranchingConfig, SamplingConfig
from eager.core.tree import TreeRequest, tokenized
from eager.engine import Engine
from eager.serve.online import Job, JobDone, JobFailed, OnlineEngine, Progress, TreeDone
from serve_helpers import SlowMock


def request(prompt: str, seed: int = 0, M: int = 8, max_tokens: int = 30) -> TreeRequest:
    r = TreeRequest(prompt, "eager-init", BranchingConfig(max_sequences=M, theta=1.0), SamplingConfig(max_tokens=max_tokens, seed=seed), chat=False)
    return tokenized(r, MockBackend().tokenizer)


def test_cancelling_a_running_tree_releases_its_cells_at_once():
    backend = MockBackend()
    engine = Engine(backend)
    engine.add(0, request("first prompt"))
    engine.add(1, request("second prompt"))
    for _ in range(5):
        engine.scheduler.admit()
        engine.step()
    before = backend.cells_in_use
    assert engine.cancel(1) and not engine.cancel(1)
    assert 0 < backend.cells_in_use < before
    assert engine.cancel(0) and backend.cells_in_use == 0 and backend.free_sequences == backend.max_sequences


def test_cancelling_a_waiting_tree_drops_it_from_the_queue():
    engine = Engine(MockBackend())
    engine.add(7, request("queued"))
    assert engine.cancel(7) and not engine.scheduler.waiting


def test_ending_a_branch_from_outside_releases_it_and_can_finish_the_tree():
    backend = MockBackend()
    engine = Engine(backend)
    tree = engine.add(0, request("one branch", M=1))
    while not tree.branches or tree.branches[0].pending is None:
        engine.scheduler.admit()
        engine.step()
    assert engine.end_branch(tree, tree.branches[0], "stop")
    assert tree.branches[0].finish_reason == "stop" and backend.cells_in_use == 0
    assert [s.position for s in engine.scheduler.finished()] == [0]




def _job(r: TreeRequest, events: queue.Queue, **kw) -> Job:
    return Job(r, lambda results: None, events.put, **kw)


def _until_done(events: queue.Queue, timeout: float = 10) -> list:
    seen = []
    while not seen or not isinstance(seen[-1], (JobDone, JobFailed)):
        seen.append(events.get(timeout=timeout))
    return seen


def test_the_loop_grows_trees_as_the_offline_engine_does():
    online = OnlineEngine(MockBackend())
    online.start()
    try:
        boxes = [queue.Queue() for _ in range(6)]
        requests = [request(f"prompt {i}", seed=i) for i in range(6)]
        for r, box in zip(requests, boxes):
            assert online.submit(_job(r, box, stream=True))
        got = [_until_done(box) for box in boxes]
    finally:
        online.close()
    offline = run_requests(MockBackend(), requests)
    for events, expected in zip(got, offline):
        result = events[-1].results[0]
        assert [s.token_ids for s in result.sequences] == [s.token_ids for s in expected.sequences]
        assert any(isinstance(e, Progress) for e in events) and isinstance(events[-2], TreeDone)
    assert online.backend.cells_in_use == 0 and online.held == 0


def test_a_cancelled_job_leaves_within_a_step_and_the_loop_goes_on():
    backend = SlowMock()  # never ends on its own; a few ms a step, so a fast machine cannot finish it early
    online = OnlineEngine(backend)
    online.start()
    try:
        box = queue.Queue()
        job = _job(request("long one", max_tokens=4000, M=4), box, stream=True)
        online.submit(job)
        box.get(timeout=10)  # it is running
        online.cancel(job)
        events = _until_done(box)
        assert isinstance(events[-1], JobFailed) and events[-1].message == "cancelled"
        deadline = time.monotonic() + 2
        while backend.cells_in_use and time.monotonic() < deadline:
            time.sleep(0.005)
        assert backend.cells_in_use == 0
        other = queue.Queue()
        online.submit(_job(request("after"), other))
        assert isinstance(_until_done(other)[-1], JobDone)
    finally:
        online.close()


def test_submit_refuses_beyond_the_requests_held():
    online = OnlineEngine(MockBackend(), max_jobs=1)  # not started: nothing is taken off the inbox
    box = queue.Queue()
    assert online.submit(_job(request("a"), box)) and not online.submit(_job(request("b"), box))
