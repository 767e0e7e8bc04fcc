"""The synchronous entry point: requests in, probe once, prompts made ready, trees grown, results out."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from eager.core import brancher
from eager.core.results import GenerationResult, StepStats
from eager.core.tree import TreeRequest
from eager.errors import EagerError
from eager.remote.driver import RemoteDriver, RemoteStats
from eager.remote.http import DEFAULT_READ_TIMEOUT_S, DEFAULT_TIMEOUT_S, Http, HttpConfig, gather_limited, run_sync
from eager.remote.server import Server, template_of
from eager.remote.templates import ChatTemplate

log = logging.getLogger(__name__)


def generate_remote(
    requests: Sequence[TreeRequest],
    *,
    url: str,
    served_model: str | None = None,
    max_concurrency: int = 16,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    retries: int = 3,
    backoff_s: float = 0.5,
    on_step: Callable[[StepStats], None] | None = None,
    server: Server | None = None,
    chat_template: str | Path | ChatTemplate | None = None,
) -> list[GenerationResult]:
    """Grow a tree for every request on an OpenAI-compatible server; synchronous.

    Returns one :class:`GenerationResult` per request, in order. Raises
    :class:`EagerError` on bad input or a server that cannot do EAGER (no
    logprobs, unknown model, unreachable after ``retries``); if the server
    fails mid-run, :class:`RemoteGenerationError` carries every finished result.
    Pass ``server`` (from :func:`~eager.remote.server.connect`) to skip probing
    it again. ``chat_template`` (a .gguf or Jinja file) is rendered here for
    chat prompts, for servers that cannot apply the model's template.
    """
    check_requests(requests, max_concurrency)
    template = template_of(chat_template)
    if server is None:
        server = Server(url, served_model, HttpConfig(timeout_s=timeout_s, read_timeout_s=read_timeout_s, retries=retries, backoff_s=backoff_s), template)
    results, _ = run_sync(lambda: run_remote(server, requests, max_concurrency=max_concurrency, on_step=on_step, chat_template=template))
    return results


async def run_remote(
    server: Server,
    requests: Sequence[TreeRequest],
    *,
    max_concurrency: int = 16,
    on_step: Callable[[StepStats], None] | None = None,
    chat_template: ChatTemplate | None = None,
    on_result: Callable[[int, GenerationResult], None] | None = None,
) -> tuple[list[GenerationResult], RemoteStats]:
    """The run on the caller's event loop: probe if needed, prompts in, trees, results and stats.

    ``on_result(position, result)`` gets each tree soon after it finishes (the
    eval records it at once); the returned list still holds every result.
    """
    check_requests(requests, max_concurrency)
    async with Http(server.http_config) as http:
        if not server.probed:
            await server.probe(http, requests[0].branching.entropy_top_k)
        prompts = await gather_limited([lambda r=r: _prompt(server, http, r, chat_template) for r in requests], max_concurrency)
        ready = [replace(r, prompt_ids=tuple(ids)) for r, (ids, _) in zip(requests, prompts)]
        driver = RemoteDriver(server, http, max_concurrency=max_concurrency, on_step=on_step, on_result=on_result)
        results = await driver.run(ready, [text for _, text in prompts])
    log.info("remote run: %s", driver.stats)
    return results, driver.stats


async def _prompt(server: Server, http: Http, request: TreeRequest, template: ChatTemplate | None) -> tuple[list[int], str]:
    if request.prompt_ids and server.id_prompts:
        return list(request.prompt_ids), ""  # tokenised already, for this server
    return await server.prompt(http, request, template)


def check_requests(requests: Sequence[TreeRequest], max_concurrency: int) -> None:
    if not requests:
        raise EagerError("no prompts given")
    if max_concurrency < 1:
        raise EagerError(f"max_concurrency must be >= 1, got {max_concurrency}")
    for request in requests:
        brancher.get_method(request.method)
        if not isinstance(request.prompt, str) or not request.prompt.strip():
            raise EagerError("the prompt is empty")
        if request.branching.entropy != "topk":
            raise EagerError("a remote server gives top-K logprobs only: use entropy topk (full-vocabulary entropy needs a local model)")
