"""The Python API, mirroring ``eager generate``.

    import eager
    results = eager.generate(["What is 17 * 23?"], model="smollm2-135m", method="eager-init", M=8, theta=2.2)
    for seq in results[0].sequences:
        print(seq.parent, seq.fork_at, seq.text)

Many prompts go into one call: the engine batches them together. Options come
as config objects (``branching=BranchingConfig(...)``, ``sampling=...``,
``engine=EngineConfig(...)``) or as plain keywords that forward to them
(``M=8, theta=1.0, max_tokens=200, ctx=8192``).

``theta="auto"`` (what ``generate`` does when given neither ``theta`` nor
``branching``) is this model's calibrated threshold: :func:`resolve_theta`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from eager.backends.base import Backend
from eager.core.config import BranchingConfig, EngineConfig, SamplingConfig, build, split_options
from eager.core.results import GenerationResult
from eager.core.tree import TreeRequest, tokenized, tree_requests
from eager.core.brancher import get_method
from eager.core.results import StepStats
from eager.engine import Engine
from eager.errors import EagerError
from eager.models import DEFAULT_MODEL, SHIPPED_MEASURE, model_identity, packaged_model_of, read_calibration, resolve_model
from eager.remote import generate_remote, parse_remote_model, redact

log = logging.getLogger(__name__)

# Sequences a backend holds at once unless a run needs more.
DEFAULT_BACKEND_SEQUENCES = 64


def load_backend(model: str = DEFAULT_MODEL, *, engine: EngineConfig | None = None, max_sequences: int = DEFAULT_BACKEND_SEQUENCES, n_batch: int = 512, **options: Any) -> Backend:
    """A llama.cpp backend for a packaged model name or a local .gguf path.

    ``ctx``, ``threads``, ``kv_type`` and ``flash_attn`` come from ``engine`` or as keywords.
    """
    from eager.backends.llama import LlamaBackend

    engine = build(EngineConfig, engine, **split_options(options, EngineConfig)[0])
    # llama.cpp keeps one output row per sequence within a batch of at most ctx tokens:
    # more sequences than ctx cells would abort inside llama_decode
    max_sequences = min(max_sequences, engine.ctx)
    path = resolve_model(model)
    log.info("%s", loading_line(model, path, engine))
    return LlamaBackend(
        str(path), n_ctx=engine.ctx, max_sequences=max_sequences, n_batch=min(max(n_batch, max_sequences), engine.ctx), n_threads=engine.threads,
        kv_type=engine.kv_type, flash_attn=engine.flash_attn,
    )


def loading_line(model: str, path, engine: EngineConfig) -> str:
    """``loading qwen2.5-coder-0.5b (491 MB, 2 threads, ctx 16384)``: what a run is about to wait for."""
    import os

    threads = engine.threads or len(os.sched_getaffinity(0))
    size = os.path.getsize(path) / 1e6 if os.path.isfile(path) else 0.0
    return f"loading {model} ({size:.0f} MB, {threads} thread{'s' if threads != 1 else ''}, ctx {engine.ctx})"


# -- theta: a number, or "auto" ------------------------------------------------------------

AUTO = "auto"


@dataclass(frozen=True)
class ThetaChoice:
    """The theta a run uses and where it came from.

    Attributes:
        value: the threshold in nats.
        source: "given" (a number passed in), "calibrated" (``eager calibrate``'s
            value for this model, from the cache), "shipped" (measured for a
            packaged model and recorded in its registry entry), or "default"
            (the paper's value: nothing is known of this model).
        detail: one line for people: which model, which file or command.
    """

    value: float
    source: str
    detail: str

    @property
    def note(self) -> str:
        return f"theta {self.value:g} ({self.source}: {self.detail})"


def entropy_measure(branching: BranchingConfig) -> str:
    """The unit a theta is in: ``topk<K>`` or ``full``; a calibration holds for one measure only."""
    return f"topk{branching.entropy_top_k}" if branching.entropy == "topk" else "full"


def served_identity(model: str) -> str | None:
    """``openai:<served name, else the URL>`` for a remote model spec; None for a local one."""
    remote = parse_remote_model(model)
    if remote is None:
        return None
    url, served_model = remote
    return f"openai:{served_model or redact(url)}"


def theta_identity(model: str) -> str:
    """What a calibration is stored under: ``gguf:<sha256>`` of a local model, ``openai:<name or URL>`` of a served one."""
    return served_identity(model) or model_identity(model)


def resolve_theta(theta: float | str = AUTO, *, model: str = DEFAULT_MODEL, branching: BranchingConfig | None = None) -> ThetaChoice:
    """What ``theta`` means for ``model``: a number as given; ``"auto"`` in this order:

    1. the calibration ``eager calibrate`` stored for this model (its GGUF's
       sha256, or the served model's name) and this entropy measure;
    2. the value shipped for a packaged model (top-20 entropy only);
    3. the paper's 2.2 (``BranchingConfig``'s default), with source "default":
       a model nothing is known of may fork rarely or often at it, so callers
       warn and name ``eager calibrate``. No calibration runs on its own: it
       takes minutes and its result should be a decision, not a side effect.
    """
    model = redact(model)  # it is shown, and stored: an openai: URL's credentials are not
    if theta != AUTO:
        if isinstance(theta, str):
            raise EagerError(f"theta must be a number of nats or {AUTO!r}, got {theta!r}")
        return ThetaChoice(float(theta), "given", "given")
    branching = branching or BranchingConfig()
    measure = entropy_measure(branching)
    identity = theta_identity(model)
    stored = read_calibration(identity, measure)
    if stored is not None:
        return ThetaChoice(float(stored["theta"]), "calibrated", f"for {model}, stored in {stored['path']} by: {stored.get('command', 'eager calibrate')}")
    packaged = packaged_model_of(identity)
    if packaged is not None and packaged.theta is not None and measure == SHIPPED_MEASURE:
        return ThetaChoice(packaged.theta, "shipped", f"for {packaged.name}, measured by: {packaged.theta_command}")
    fallback = BranchingConfig().theta
    why = f"no calibration of {model} for {measure} entropy"
    return ThetaChoice(fallback, "default", f"the paper's value; {why}: run eager calibrate --model {model}")


def _auto_theta(model: str | None, backend: Backend | None, branching: BranchingConfig) -> BranchingConfig:
    """``branching`` with theta "auto" resolved for the model, logged (a warning when nothing is known of it)."""
    if backend is not None and model is None:
        log.debug("theta auto with a backend and no model name: the default %s", branching.theta)
        return branching
    choice = resolve_theta(AUTO, model=model or DEFAULT_MODEL, branching=branching)
    (log.warning if choice.source == "default" else log.info)("%s", choice.note)
    return replace(branching, theta=choice.value)


def run_requests(backend: Backend, requests: Sequence[TreeRequest], *, engine: EngineConfig | None = None, on_step=None) -> list[GenerationResult]:
    """Tokenise and grow every request on ``backend``; results in request order."""
    engine = engine or EngineConfig()
    tokens = [tokenized(r, backend.tokenizer) for r in requests]
    runner = Engine(backend, max_prompts_in_flight=engine.max_prompts_in_flight, on_step=on_step)
    results: list[GenerationResult | None] = [None] * len(tokens)
    for position, result in runner.run(tokens):
        results[position] = result
    return results  # type: ignore[return-value]


def generate(
    prompts: str | Sequence[str],
    *,
    model: str | None = None,
    backend: Backend | None = None,
    method: str = "eager-init",
    branching: BranchingConfig | None = None,
    sampling: SamplingConfig | None = None,
    engine: EngineConfig | None = None,
    chat: bool = True,
    chat_template: str | None = None,
    on_step: Callable[[StepStats], None] | None = None,
    **options: Any,
) -> list[GenerationResult]:
    """Generate for every prompt with EAGER-init or full parallel sampling.

    Returns one :class:`GenerationResult` per prompt, in the order given.
    Pass ``backend`` to reuse a loaded model (``load_backend``) or a mock;
    ``model="openai:http://HOST:PORT/v1#name"`` drives an OpenAI-compatible server.
    Keyword ``options`` are fields of the three configs (``M`` for ``max_sequences``).
    Without ``theta`` and ``branching``, theta is ``"auto"``: the calibrated value for
    ``model`` (:func:`resolve_theta`; with a ``backend``, for the ``model`` named
    beside it, else the default 2.2).
    ``chat_template`` (a .gguf or Jinja file) applies a chat template on this side
    for servers that cannot apply the model's own (remote models only).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise EagerError("no prompts given")
    b, s, e = split_options(options, BranchingConfig, SamplingConfig, EngineConfig)
    theta = b.pop("theta", AUTO if branching is None else None)
    branching = build(BranchingConfig, branching, **b)
    sampling = build(SamplingConfig, sampling, **s)
    engine = build(EngineConfig, engine, **e)
    forks = get_method(method).forks  # fail on bad input before loading a model
    if theta == AUTO and forks:
        branching = _auto_theta(model, backend, branching)
    elif theta not in (None, AUTO):
        branching = build(BranchingConfig, branching, theta=theta)
    model = model or DEFAULT_MODEL
    requests = tree_requests(list(prompts), method=method, branching=branching, sampling=sampling, chat=chat)
    if backend is None and (remote := parse_remote_model(model)):
        url, served_model = remote
        return generate_remote(requests, url=url, served_model=served_model, on_step=on_step, chat_template=chat_template, timeout_s=engine.timeout_s, read_timeout_s=engine.read_timeout_s)
    if backend is None and sampling.max_tokens >= engine.ctx:
        raise EagerError(f"max_tokens {sampling.max_tokens} does not fit in the context of {engine.ctx} tokens; lower max_tokens or raise ctx")
    own_backend = backend is None
    if own_backend:
        backend = load_backend(model, engine=engine, max_sequences=max(DEFAULT_BACKEND_SEQUENCES, branching.max_sequences))
    try:
        return run_requests(backend, requests, engine=engine, on_step=on_step)
    finally:
        if own_backend:
            backend.close()
