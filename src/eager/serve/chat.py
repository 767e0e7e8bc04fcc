"""A conversation through the model's Jinja chat template (the GGUF's own), rendered in a sandbox."""

from __future__ import annotations

from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from eager.serve.requests import bad


def _raise(message: str):
    raise jinja2.TemplateError(message)


def render_conversation(source: str, messages: list[tuple[str, str]]) -> str:
    """The prompt text for a list of (role, content), ending where the assistant's answer starts.

    BOS is left to the tokenizer (rendered as empty), as llama.cpp does.
    """
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source).render(
            messages=[{"role": role, "content": content} for role, content in messages],
            add_generation_prompt=True,
            bos_token="",
            eos_token="",
        )
    except jinja2.TemplateError as exc:
        raise bad(f"the model's chat template cannot render this conversation: {exc}", "messages") from None
