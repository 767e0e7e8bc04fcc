"""``eager serve``: an OpenAI-compatible server whose n is EAGER, with a live playground.

The files, in a request's order:

* :mod:`~eager.serve.config`: listening address and limits (:class:`ServeConfig`);
* :mod:`~eager.serve.gate`: body size limit and request counting (ASGI middleware);
* :mod:`~eager.serve.protocol`: the OpenAI request bodies and the ``eager`` object;
* :mod:`~eager.serve.requests`: a body checked and turned into tree requests (text at the edge);
* :mod:`~eager.serve.online`: ONE engine loop in a thread, fed by every request (continuous batching);
* :mod:`~eager.serve.flow`: a request's asyncio side: wait, stream, cancel on disconnect or time-out;
* :mod:`~eager.serve.responses`, :mod:`~eager.serve.stream`: results as OpenAI JSON and SSE chunks;
* :mod:`~eager.serve.metrics`: Prometheus counters; :mod:`~eager.serve.playground`: the page at ``/``;
* :mod:`~eager.serve.app`: :func:`create_app`, the routes.
"""

from eager.serve.app import create_app
from eager.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]
