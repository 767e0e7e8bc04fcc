"""The Python API, mirroring ``eager generate``.

    import eager
    results = eager.generate(["What is 17 * 23?"], model="smollm2-135m", method="eager-init", M=8, theta=2.2)
    for seq in results[0].sequences:
        print(seq.parent, seq.fork_at, seq.text)

Many prompts go into one call: the engine batches them together. Options come
as config objects (``branching=BranchingConfig(...)``, ``sampling=...``,
``engine=EngineConfig(...)``) or as plain keywords that forward to them
(``M=8, theta=1.0, max_tokens=200, ctx=8192``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from eager.backends.base import Backend
from eager.core.config import BranchingConfig, EngineConfig, SamplingConfig, build, split_options
from eager.core.results import GenerationResult
from eager.core.tree import TreeRequest, tokenized, tree_requests
from eager.core.brancher import get_method
from eager.core.results import StepStats
from eager.engine import Engine
from eager.errors import EagerError
from eager.models import DEFAULT_MODEL, resolve_model
from eager.remote import generate_remote, parse_remote_model

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
    return LlamaBackend(
        str(path), n_ctx=engine.ctx, max_sequences=max_sequences, n_batch=min(max(n_batch, max_sequences), engine.ctx), n_threads=engine.threads,
        kv_type=engine.kv_type, flash_attn=engine.flash_attn,
    )


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
    model: str = DEFAULT_MODEL,
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
    ``chat_template`` (a .gguf or Jinja file) applies a chat template on this side
    for servers that cannot apply the model's own (remote models only).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise EagerError("no prompts given")
    b, s, e = split_options(options, BranchingConfig, SamplingConfig, EngineConfig)
    branching = build(BranchingConfig, branching, **b)
    sampling = build(SamplingConfig, sampling, **s)
    engine = build(EngineConfig, engine, **e)
    get_method(method)  # fail on bad input before loading a model
    requests = tree_requests(list(prompts), method=method, branching=branching, sampling=sampling, chat=chat)
    if backend is None and (remote := parse_remote_model(model)):
        url, served_model = remote
        return generate_remote(requests, url=url, served_model=served_model, on_step=on_step, chat_template=chat_template)
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
