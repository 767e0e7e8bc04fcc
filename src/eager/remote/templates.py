"""Chat templates rendered here, for servers that cannot apply one over HTTP.

vLLM applies the model's template in ``/tokenize`` (with ``messages``) and
llama-server in ``/apply-template``; llama-cpp-python's server and SGLang
offer nothing of the kind. For those, the option ``chat_template`` names
either the model's ``.gguf`` file, whose embedded template (and BOS/EOS
token texts) llama.cpp reads, or a Jinja text file. The template is rendered
with jinja2 in a sandbox, as Hugging Face transformers and llama-cpp-python
render chat templates: ``messages``, ``add_generation_prompt``,
``bos_token``, ``eos_token``, ``raise_exception`` and ``strftime_now``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from eager.errors import EagerError


class NoChatTemplate(EagerError):
    """No way to apply the model's chat template: name one with the option ``chat_template``."""


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template and the special-token texts it may use.

    Attributes:
        source: the Jinja text.
        bos_token, eos_token: their texts ("" when unknown, as from a plain Jinja file).
        adds_bos: the tokenizer adds BOS itself, so a rendered leading BOS is
            dropped (as llama.cpp does) and the prompt does not get two.
        origin: where it came from, for messages.
    """

    source: str
    bos_token: str = ""
    eos_token: str = ""
    adds_bos: bool = False
    origin: str = ""

    def render(self, user_text: str) -> str:
        """The prompt text for one user message, ending where the assistant's answer starts."""
        return self.render_messages([("user", user_text)])

    def render_messages(self, messages: list[tuple[str, str]]) -> str:
        """The prompt text for a conversation of (role, content), ending where the assistant's answer starts."""
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            text = env.from_string(self.source).render(
                messages=[{"role": role, "content": content} for role, content in messages],
                add_generation_prompt=True,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except jinja2.TemplateError as exc:
            raise EagerError(f"the chat template from {self.origin or 'chat_template'} failed to render: {exc}") from None
        if self.adds_bos and self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token) :]
        return text


def load_chat_template(path: str | Path) -> ChatTemplate:
    """A template from a ``.gguf`` file (its embedded template) or a Jinja text file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise EagerError(f"chat_template {str(path)!r} is not a file (give a .gguf model file or a Jinja template file)")
    if file.suffix.lower() == ".gguf":
        return _from_gguf(file)
    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EagerError(f"cannot read chat_template {str(file)!r}: {exc}") from None
    if not source.strip():
        raise EagerError(f"chat_template {str(file)!r} is empty")
    return ChatTemplate(source, origin=str(file))


def _from_gguf(file: Path) -> ChatTemplate:
    """Read the template and the BOS/EOS texts with llama.cpp, loading the vocabulary only."""
    from eager.backends.llama import init_llama, model_params

    lib = init_llama()
    params = model_params(lib)
    params.vocab_only = True
    model = lib.llama_model_load_from_file(str(file).encode(), params)
    if not model:
        raise EagerError(f"chat_template {str(file)!r}: llama.cpp cannot read this .gguf file")
    try:
        source = lib.llama_model_chat_template(model, None)
        if not source:
            raise EagerError(f"chat_template {str(file)!r}: the .gguf file has no chat template (tokenizer.chat_template)")
        vocab = lib.llama_model_get_vocab(model)
        return ChatTemplate(
            source.decode("utf-8"),
            bos_token=_token_text(lib, vocab, lib.llama_vocab_bos(vocab)),
            eos_token=_token_text(lib, vocab, lib.llama_vocab_eos(vocab)),
            adds_bos=bool(lib.llama_vocab_get_add_bos(vocab)),
            origin=str(file),
        )
    finally:
        lib.llama_model_free(model)


def _token_text(lib, vocab, token: int) -> str:
    if token < 0:
        return ""
    text = lib.llama_vocab_get_text(vocab, token)
    return text.decode("utf-8", "replace") if text else ""


def _tojson(value, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(message: str):
    raise jinja2.TemplateError(message)
