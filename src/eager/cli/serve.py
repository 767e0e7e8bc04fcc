"""``eager serve``: an OpenAI-compatible server whose n is EAGER, with a playground at ``/``."""

from __future__ import annotations

import os
import sys

from eager.cli.options import add_config_options, config_from_args
from eager.core.config import EngineConfig
from eager.errors import EagerError
from eager.models import DEFAULT_MODEL

KEY_ENV = "EAGER_API_KEY"
REMOTE_ONLY = ("timeout_s", "read_timeout_s")  # options of openai: models, which serve does not drive


def add_parser(sub) -> None:
    """Register ``eager serve`` on an argparse subparsers object."""
    from eager.serve.config import ServeConfig

    p = sub.add_parser(
        "serve",
        help="an OpenAI-compatible server whose n is EAGER (one tree per request), with a live playground at /",
        description="Serve /v1/completions and /v1/chat/completions: n > 1 grows one EAGER tree of at most n sequences.",
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"packaged model name or path to a .gguf file (default: {DEFAULT_MODEL})")
    p.add_argument("--api-key", default=None, help=f"require 'Authorization: Bearer KEY' on /v1 routes (default: ${KEY_ENV}, else none)")
    add_config_options(p.add_argument_group("server"), ServeConfig)
    add_config_options(p.add_argument_group("engine"), EngineConfig, exclude=REMOTE_ONLY)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from eager.serve import create_app
    except ImportError as exc:
        raise EagerError(f"eager serve needs the server extra (pip install -e .[server]): {exc.name} is missing") from None
    from eager.api import load_backend
    from eager.serve.config import ServeConfig

    config = config_from_args(ServeConfig, args)
    engine = config_from_args(EngineConfig, args, exclude=REMOTE_ONLY)
    api_key = args.api_key or os.environ.get(KEY_ENV) or None
    backend = load_backend(args.model, engine=engine)
    try:
        app = create_app(backend, model_name=args.model, config=config, api_key=api_key)
        name = config.served_model_name or args.model
        where = f"http://{config.host}:{config.port}"
        print(f"eager serve: {name} on {where}/v1 (playground: {where}/), API key {'required' if api_key else 'off'}", file=sys.stderr, flush=True)
        uvicorn.run(app, host=config.host, port=config.port, log_level="info", timeout_graceful_shutdown=5)
    finally:
        backend.close()
    return 0
