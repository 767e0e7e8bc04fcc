"""EAGER over an OpenAI-compatible completions server (vLLM, SGLang, llama.cpp).

A server gives the top-K log-probabilities of each sampled token, not the
full logits a local backend returns, so this package is a second driver of
the same rules (:mod:`eager.core.brancher`), read in the order data flows:

* :mod:`~eager.remote.http`: one kept asyncio HTTP client, server-sent
  events, retries with back-off, time-outs, typed one-line errors;
* :mod:`~eager.remote.credentials`: ``user:password@`` or a key in the URL
  used to authenticate and shown as ``***``;
* :mod:`~eager.remote.logprobs`: a streamed token, its top-K log-probabilities
  and their entropy, in either wire format;
* :mod:`~eager.remote.dialects`: what each server family does beyond
  ``/v1/completions`` (tokenize, chat template, sampling fields, slots);
* :mod:`~eager.remote.templates`: chat templates rendered here (option
  ``chat_template``) for servers that cannot apply one;
* :mod:`~eager.remote.server`: the server, probed once; prompts made ready;
* :mod:`~eager.remote.vocab`: ids and texts of the server's tokens;
* :mod:`~eager.remote.steps`: one step of a tree as the brancher sees it;
* :mod:`~eager.remote.driver`: branch streams, forks, lock-step steps, results;
* :mod:`~eager.remote.generate`: the synchronous entry point.

docs/remote.md says what each server supports and costs.
"""

from eager.remote.credentials import redact
from eager.remote.driver import LOOKAHEAD, RemoteDriver, RemoteGenerationError, RemoteStats
from eager.remote.generate import generate_remote, run_remote
from eager.remote.http import BadAnswer, HttpConfig, RemoteError, ServerError, ServerUnavailable
from eager.remote.logprobs import Candidate, NoLogprobs, StreamedToken, parse_choice, token_entropy
from eager.remote.server import Server, connect, parse_remote_model
from eager.remote.templates import ChatTemplate, NoChatTemplate, load_chat_template

__all__ = [
    "BadAnswer",
    "Candidate",
    "ChatTemplate",
    "HttpConfig",
    "LOOKAHEAD",
    "NoChatTemplate",
    "NoLogprobs",
    "RemoteDriver",
    "RemoteError",
    "RemoteGenerationError",
    "RemoteStats",
    "Server",
    "ServerError",
    "ServerUnavailable",
    "StreamedToken",
    "connect",
    "generate_remote",
    "load_chat_template",
    "parse_choice",
    "parse_remote_model",
    "redact",
    "run_remote",
    "token_entropy",
]
