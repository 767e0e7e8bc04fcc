"""The FastAPI application: OpenAI-compatible routes over one online engine.

``create_app(backend, model_name=...)`` is all a caller needs; ``eager serve``
runs it under uvicorn. Every ``/v1`` route checks the API key (when one is
set) in constant time; ``/health`` and ``/`` are open. Every error, ours or
the framework's, leaves in OpenAI's shape ``{"error": {message, type, param, code}}``.
"""

from __future__ import annotations

import hmac
import logging
import time
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Callable

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from eager.api import ThetaChoice, resolve_theta
from eager.backends.base import Backend
from eager.core.config import BranchingConfig
from eager.serve import flow
from eager.serve.config import ServeConfig
from eager.serve.gate import BodyLimit, CountRequests
from eager.serve.metrics import ServeMetrics
from eager.serve.online import OnlineEngine
from eager.serve.protocol import ChatCompletionRequest, CompletionRequest
from eager.serve.requests import ApiError, chat_prompt, completion_prompt, completion_prompts, plan_request
from eager.serve.responses import Format

log = logging.getLogger(__name__)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def model_theta(model: str) -> Callable[[BranchingConfig], ThetaChoice]:
    """theta "auto" for ``model``, resolved once per entropy measure."""

    @lru_cache(maxsize=8)
    def resolve(entropy: str, top_k: int) -> ThetaChoice:
        choice = resolve_theta("auto", model=model, branching=BranchingConfig(entropy=entropy, entropy_top_k=top_k))
        (log.warning if choice.source == "default" else log.info)("%s", choice.note)
        return choice

    return lambda branching: resolve(branching.entropy, branching.entropy_top_k)


class Server:
    """What the routes share: the engine loop, the settings, the key, the metrics."""

    def __init__(self, backend: Backend, model_name: str, config: ServeConfig, api_key: str | None, theta_for) -> None:
        self.metrics = ServeMetrics()
        self.online = OnlineEngine(backend, max_jobs=config.max_queued_requests, observer=self.metrics)
        self.model_name, self.config, self.theta_for = model_name, config, theta_for
        self._key = api_key.encode("utf-8") if api_key else None
        self.metrics.held.set_function(lambda: self.online.held)
        self.metrics.queue.set_function(lambda: self.online.waiting)
        self.metrics.cells.set_function(lambda: backend.cells_in_use)

    def check_key(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode("utf-8"), self._key)):
            raise ApiError(401, "Incorrect or missing API key: send it as 'Authorization: Bearer KEY'", code="invalid_api_key")

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise ApiError(404, f"The model {name!r} does not exist; this server serves {self.model_name!r}", param="model", code="model_not_found")

    def plan(self, body, prompt: str, chat: bool, prompt_ids: tuple[int, ...] = ()):
        self.check_model(body.model)
        return plan_request(body, prompt, chat, engine=self.online.engine, config=self.config, theta_for=self.theta_for, prompt_ids=prompt_ids)

    async def answer(self, request: Request, body, planned: list, fmt: Format):
        """``planned``: one per prompt, grown side by side; choices prompt-major (prompt i's from i * n)."""
        timeout = self.config.request_timeout_s
        if not body.stream:
            return JSONResponse(await flow.complete(request, self.online, planned, fmt, timeout))
        jobs, events = flow.submit(self.online, planned, stream=True)
        chunks = flow.stream_chunks(request, self.online, jobs, events, planned, fmt, timeout)
        return StreamingResponse(chunks, media_type="text/event-stream", headers=SSE_HEADERS)


def create_app(
    backend: Backend, *, model_name: str, config: ServeConfig | None = None, api_key: str | None = None,
    theta_for: Callable[[BranchingConfig], ThetaChoice] | None = None,
) -> FastAPI:
    """The server for one loaded model. ``theta_for`` resolves theta "auto" (default: ``model_name``'s calibration)."""
    config = config or ServeConfig()
    server = Server(backend, config.served_model_name or model_name, config, api_key, theta_for or model_theta(model_name))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.online.start()
        yield
        server.online.close()

    app = FastAPI(title="eager serve", version="1", lifespan=lifespan, description="OpenAI-compatible completions whose n is EAGER: one tree that forks where the model is uncertain.")
    app.state.server = server
    _add_error_handlers(app)
    app.include_router(_v1_routes(server), prefix="/v1", dependencies=[Depends(server.check_key)])
    app.include_router(_open_routes(server))
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(CountRequests, metrics=server.metrics)
    return app


def _v1_routes(server: Server) -> APIRouter:
    router = APIRouter()

    @router.post("/completions")
    async def completions(body: CompletionRequest, request: Request):
        prompts = completion_prompts(body, server.config.max_queued_requests)
        planned = [server.plan(body, prompt, chat=False) for prompt in prompts]
        return await server.answer(request, body, planned, Format(chat=False, model=server.model_name))

    @router.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        text, chat, ids = chat_prompt(body, server.online.backend.tokenizer)
        planned = server.plan(body, text, chat, ids)
        return await server.answer(request, body, [planned], Format(chat=True, model=server.model_name))

    @router.get("/models")
    async def models():
        card = {"id": server.model_name, "object": "model", "created": 0, "owned_by": "eager"}
        return {"object": "list", "data": [card]}

    @router.post("/eager/tree")
    async def tree(body: CompletionRequest, request: Request):
        """The playground's feed: the growing tree as GenerationResult dicts (SSE)."""
        planned = server.plan(body, completion_prompt(body), chat=True)
        jobs, events = flow.submit(server.online, [planned], snapshots=True)
        theta = planned.theta.value if planned.theta else None
        feed = flow.stream_snapshots(request, server.online, jobs[0], events, server.config.request_timeout_s, theta)
        return StreamingResponse(feed, media_type="text/event-stream", headers=SSE_HEADERS)

    return router


def _open_routes(server: Server) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health():
        alive = server.online.alive
        body = {"status": "ok" if alive else "engine stopped", "requests_held": server.online.held, "kv_cells_in_use": server.online.backend.cells_in_use}
        return JSONResponse(body, status_code=200 if alive else 503)

    @router.get("/metrics")
    async def metrics():
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground():
        from eager.serve.playground import page

        return HTMLResponse(page(server.model_name))

    return router


def _error(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return _error(ApiError(400, "the request body is not valid JSON", code="invalid_json"))
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        return _error(ApiError(400, f"{param or 'body'}: {first.get('msg', 'invalid value')}", param=param, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(ApiError(exc.status_code, str(exc.detail), type=kind))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception):
        log.exception("unexpected error in %s", request.url.path)
        return _error(ApiError(500, f"internal error: {type(exc).__name__}", type="server_error"))
