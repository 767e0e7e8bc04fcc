"""``eager serve``'s settings: where it listens and the limits every request is held to.

Fields are made with :func:`eager.core.config.option`, so ``eager serve``'s
flags, defaults and help come from here (as for the engine's configs).
"""

from __future__ import annotations

from dataclasses import dataclass

from eager.core.config import option
from eager.errors import EagerError


@dataclass(frozen=True)
class ServeConfig:
    """Attributes:
    host, port: where the server listens (127.0.0.1 unless told otherwise).
    served_model_name: the name clients pass as ``model`` (default: the model's).
    max_n: most choices one request may ask for.
    max_tokens_limit: most completion tokens a request may ask for per sequence.
    default_max_tokens: completion tokens when a request names none.
    max_prompt_tokens: longest prompt, in tokens.
    max_body_bytes: largest request body.
    max_queued_requests: requests held at once (running or waiting); beyond, 429.
    request_timeout_s: a request still running after this long is ended (504).
    """

    host: str = option("127.0.0.1", "address to bind (default: {default}; 0.0.0.0 exposes the server to the network)")
    port: int = option(8000, "port to listen on (default: {default})")
    served_model_name: str | None = option(None, "the model name clients pass (default: the --model value)")
    max_n: int = option(16, "most choices (n) one request may ask for (default: {default})")
    max_tokens_limit: int = option(2048, "most completion tokens a request may ask for (default: {default})")
    default_max_tokens: int = option(256, "completion tokens when a request gives no max_tokens (default: {default})")
    max_prompt_tokens: int = option(4096, "longest prompt in tokens (default: {default})")
    max_body_bytes: int = option(1 << 20, "largest request body in bytes (default: {default})")
    max_queued_requests: int = option(64, "requests held at once, running or waiting; more get 429 (default: {default})")
    request_timeout_s: float = option(600.0, "seconds before a request is ended with 504 (default: {default})", flag="--request-timeout")

    def __post_init__(self) -> None:
        checks = {
            "port": 0 <= self.port <= 65535,
            "max_n": self.max_n >= 1,
            "max_tokens_limit": self.max_tokens_limit >= 1,
            "default_max_tokens": 1 <= self.default_max_tokens <= self.max_tokens_limit,
            "max_prompt_tokens": self.max_prompt_tokens >= 1,
            "max_body_bytes": self.max_body_bytes >= 1024,
            "max_queued_requests": self.max_queued_requests >= 1,
            "request_timeout_s": self.request_timeout_s > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise EagerError(f"{name} is out of range: {getattr(self, name)!r}")
