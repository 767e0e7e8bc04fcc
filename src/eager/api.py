"""The Python API, mirroring ``eager generate``.

    import eager
    results = eager.generate(["What is 17 * 23?"], model="smollm2-135m", method="eager-init", M=8, theta=2.2)
    for seq in results[0].sequences:
        print(seq.parent, seq.fork_at, seq.text)

Many prompts go into one call: the engine batches them together.
"""

from __future__ import annotations

from typing import Callable, Sequence

from eager.backends.base import Backend
from eager.config import BranchingConfig, SamplingConfig
from eager.engine import Engine, StepStats
from eager.errors import EagerError
from eager.models import DEFAULT_MODEL, resolve_model
from eager.remote import generate_remote, parse_remote_model
from eager.results import GenerationResult
from eager.sequence import Request
from eager.strategies import get_strategy

DEFAULT_CTX = 16384


def load_backend(
    model: str = DEFAULT_MODEL,
    *,
    ctx: int = DEFAULT_CTX,
    max_sequences: int = 64,
    n_batch: int = 512,
    threads: int | None = None,
) -> Backend:
    """A llama.cpp backend for a packaged model name or a local .gguf path."""
    from eager.backends.llama import LlamaBackend

    if ctx < 16:
        raise EagerError(f"--ctx must be at least 16 cells, got {ctx}")
    if threads is not None and threads < 1:
        raise EagerError(f"--threads must be >= 1, got {threads}")
    path = resolve_model(model)
    return LlamaBackend(str(path), n_ctx=ctx, max_sequences=max_sequences, n_batch=max(n_batch, max_sequences), n_threads=threads)


def make_requests(
    prompts: Sequence[str],
    backend: Backend,
    *,
    method: str,
    branching: BranchingConfig,
    sampling: SamplingConfig,
    chat: bool = True,
    keys: Sequence[tuple[int, ...]] | None = None,
) -> list[Request]:
    """Tokenise prompts (text at the edge) into engine requests."""
    strategy = get_strategy(method)
    requests = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise EagerError(f"prompt {i} is empty")
        ids = tuple(backend.tokenizer.encode_prompt(prompt, chat))
        key = keys[i] if keys is not None else (i,)
        requests.append(Request(ids, strategy, branching, sampling, key=key, prompt=prompt))
    return requests


def generate(
    prompts: str | Sequence[str],
    *,
    model: str = DEFAULT_MODEL,
    backend: Backend | None = None,
    method: str = "eager-init",
    M: int = BranchingConfig.max_sequences,
    theta: float = BranchingConfig.theta,
    dynamic_theta: bool = BranchingConfig.dynamic_theta,
    window: int = BranchingConfig.window,
    entropy: str = BranchingConfig.entropy,
    entropy_top_k: int = BranchingConfig.entropy_top_k,
    end_of_thinking: str = BranchingConfig.end_of_thinking,
    temperature: float = SamplingConfig.temperature,
    top_p: float = SamplingConfig.top_p,
    top_k: int = SamplingConfig.top_k,
    max_tokens: int = SamplingConfig.max_tokens,
    seed: int = SamplingConfig.seed,
    chat: bool = True,
    ctx: int = DEFAULT_CTX,
    threads: int | None = None,
    max_prompts_in_flight: int | None = None,
    on_step: Callable[[StepStats], None] | None = None,
) -> list[GenerationResult]:
    """Generate for every prompt with EAGER-init or full parallel sampling.

    Returns one :class:`GenerationResult` per prompt, in the order given.
    Pass ``backend`` to reuse a loaded model (``load_backend``) or a mock;
    ``model="openai:http://HOST:PORT/v1#name"`` drives an OpenAI-compatible server.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise EagerError("no prompts given")
    branching = BranchingConfig(
        max_sequences=M,
        theta=theta,
        dynamic_theta=dynamic_theta,
        window=window,
        entropy=entropy,
        entropy_top_k=entropy_top_k,
        end_of_thinking=end_of_thinking,
    )
    sampling = SamplingConfig(temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens, seed=seed)
    get_strategy(method)  # fail on bad input before loading a model
    if backend is None and (remote := parse_remote_model(model)):
        url, served_model = remote
        return generate_remote(
            prompts, url=url, served_model=served_model, method=method, branching=branching,
            sampling=sampling, chat=chat, on_step=on_step,
        )
    if backend is None and max_tokens >= ctx:
        raise EagerError(f"max-tokens {max_tokens} does not fit in the context of {ctx} tokens; lower --max-tokens or raise --ctx")
    own_backend = backend is None
    if own_backend:
        backend = load_backend(model, ctx=ctx, max_sequences=max(64, M), threads=threads)
    try:
        requests = make_requests(prompts, backend, method=method, branching=branching, sampling=sampling, chat=chat)
        engine = Engine(backend, max_prompts_in_flight=max_prompts_in_flight, on_step=on_step)
        results: list[GenerationResult | None] = [None] * len(requests)
        for position, result in engine.run(requests):
            results[position] = result
        return results  # type: ignore[return-value]
    finally:
        if own_backend:
            backend.close()
