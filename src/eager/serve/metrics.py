"""Prometheus metrics of one server (its own registry, so several can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from eager.core.results import GenerationResult


class ServeMetrics:
    """Requests, tokens computed against sequence tokens, forks, preemptions, queue, step time."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("eager_requests", "HTTP requests answered, by endpoint and status", ["endpoint", "status"], registry=r)
        self.generated = Counter("eager_generated_tokens", "tokens the engine computed (a shared prefix once)", registry=r)
        self.sequence_tokens = Counter("eager_sequence_tokens", "sum of sequence lengths (what independent samples would cost)", registry=r)
        self.prompt_tokens = Counter("eager_prompt_tokens", "prompt tokens of finished trees", registry=r)
        self.trees = Counter("eager_trees", "trees finished", registry=r)
        self.forks = Counter("eager_forks", "forks in finished trees", registry=r)
        self.preemptions = Counter("eager_preemptions", "times a tree's cache was released to make room", registry=r)
        self.steps = Histogram("eager_step_seconds", "time of one engine step", registry=r, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.queue = Gauge("eager_queue_length", "trees waiting for the KV cache", registry=r)
        self.held = Gauge("eager_requests_held", "requests running or waiting", registry=r)
        self.cells = Gauge("eager_kv_cells_in_use", "KV cache cells in use", registry=r)

    def step(self, seconds: float, engine) -> None:
        self.steps.observe(seconds)
        self.queue.set(len(engine.scheduler.waiting))
        self.cells.set(engine.backend.cells_in_use)

    def tree_done(self, result: GenerationResult) -> None:
        self.trees.inc()
        self.generated.inc(result.generated_tokens)
        self.sequence_tokens.inc(result.sequence_tokens)
        self.prompt_tokens.inc(result.prompt_tokens)
        self.forks.inc(len(result.forks))
        self.preemptions.inc(result.preemptions)

    def render(self) -> bytes:
        return generate_latest(self.registry)
