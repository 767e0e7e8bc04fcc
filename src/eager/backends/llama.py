"""The llama.cpp backend, on llama-cpp-python's low-level API.

One context holds every sequence in a unified KV cache, so a fork is a
metadata copy (``llama_memory_seq_cp``): the forked prefix is never computed
again and its cells are shared. Every item of a step goes into ONE
``llama_decode`` call; logits rows are read with ``llama_get_logits_ith``.
"""

from __future__ import annotations

import ctypes
import logging
import os
from functools import lru_cache
from typing import Sequence

import numpy as np

from eager.backends.base import CacheFull, SequenceSlots, StepItem
from eager.errors import EagerError

log = logging.getLogger(__name__)

# llama.cpp's own cap on sequences in one context (LLAMA_MAX_SEQ)
LLAMA_MAX_SEQ = 256


def _llama():
    import llama_cpp  # imported lazily: the mock path and `--help` never pay for it

    return llama_cpp


@lru_cache(maxsize=1)
def _init_llama_backend() -> None:
    lib = _llama()
    _silence_llama_logs(lib)
    lib.llama_backend_init()


def _silence_llama_logs(lib) -> None:
    """Route llama.cpp's chatter to nowhere unless EAGER_LLAMA_LOG is set."""
    if os.environ.get("EAGER_LLAMA_LOG"):
        return

    @lib.llama_log_callback
    def _quiet(level, text, user_data):  # noqa: ARG001
        return None

    _silence_llama_logs.callback = _quiet  # keep a reference: C holds the pointer
    lib.llama_log_set(_quiet, ctypes.c_void_p(0))


class LlamaTokenizer:
    """Tokenizer and chat template read from the GGUF itself."""

    def __init__(self, lib, model, vocab) -> None:
        self._lib = lib
        self._model = model
        self._vocab = vocab
        n_vocab = lib.llama_vocab_n_tokens(vocab)
        self.eog_ids = frozenset(t for t in range(n_vocab) if lib.llama_vocab_is_eog(vocab, t))
        template = lib.llama_model_chat_template(model, None)
        self.chat_template: bytes | None = template or None

    def encode(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        raw = text.encode("utf-8")
        capacity = len(raw) + 16
        buf = (self._lib.llama_token * capacity)()
        n = self._lib.llama_tokenize(self._vocab, raw, len(raw), buf, capacity, add_special, parse_special)
        if n < 0:
            capacity = -n
            buf = (self._lib.llama_token * capacity)()
            n = self._lib.llama_tokenize(self._vocab, raw, len(raw), buf, capacity, add_special, parse_special)
        return list(buf[:n])

    def apply_chat_template(self, user_text: str) -> str:
        lib = self._lib
        message = (lib.llama_chat_message * 1)()
        message[0].role = b"user"
        message[0].content = user_text.encode("utf-8")
        size = max(4096, 2 * len(message[0].content) + 512)
        buf = ctypes.create_string_buffer(size)
        n = lib.llama_chat_apply_template(self.chat_template, message, 1, True, buf, size)
        if n > size:
            buf = ctypes.create_string_buffer(n)
            n = lib.llama_chat_apply_template(self.chat_template, message, 1, True, buf, n)
        if n < 0:
            raise EagerError("the model's chat template is not supported by llama.cpp; use --raw-prompt")
        return buf.raw[:n].decode("utf-8", errors="replace")

    def encode_prompt(self, text: str, chat: bool) -> list[int]:
        """Prompt ids: the chat template (when asked and present) then tokenise."""
        if chat and self.chat_template:
            return self.encode(self.apply_chat_template(text), add_special=True, parse_special=True)
        return self.encode(text, add_special=True, parse_special=False)

    def encode_marker(self, text: str) -> list[list[int]]:
        """The ways a marker such as "</think>" can appear as token ids."""
        variants = {tuple(self.encode(t, add_special=False, parse_special=True)) for t in (text, " " + text)}
        return [list(v) for v in variants if v]

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    def decode(self, token_ids: Sequence[int]) -> str:
        return b"".join(self._piece(int(t)) for t in token_ids).decode("utf-8", errors="replace")


class LlamaBackend:
    """Many sequences in one llama.cpp context, one decode call per step.

    Args:
        model_path: a GGUF file.
        n_ctx: KV cells shared by all sequences (a forked prefix uses its cells once).
        max_sequences: sequences that may exist at once (<= 256).
        n_batch: most tokens in one step (prefill chunks and decodes together).
        n_threads: CPU threads; None lets llama.cpp choose.
    """

    def __init__(
        self,
        model_path: str,
        *,
        n_ctx: int = 8192,
        max_sequences: int = 64,
        n_batch: int = 512,
        n_threads: int | None = None,
    ) -> None:
        if not os.path.isfile(model_path):
            raise EagerError(f"model file not found: {model_path}")
        if not 1 <= max_sequences <= LLAMA_MAX_SEQ:
            raise EagerError(f"llama.cpp holds 1..{LLAMA_MAX_SEQ} sequences at once, asked for {max_sequences}")
        lib = self._lib = _llama()
        _init_llama_backend()

        mparams = lib.llama_model_default_params()
        self._model = lib.llama_model_load_from_file(model_path.encode("utf-8"), mparams)
        if not self._model:
            raise EagerError(f"llama.cpp could not load {model_path} (not a valid GGUF model?)")
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.vocab_size = lib.llama_vocab_n_tokens(self._vocab)
        self.n_ctx_train = lib.llama_model_n_ctx_train(self._model)
        self.tokenizer = LlamaTokenizer(lib, self._model, self._vocab)

        cparams = lib.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = max_sequences
        cparams.kv_unified = True  # one pool of cells: shared prefixes are stored once
        cparams.no_perf = True
        if n_threads:
            cparams.n_threads = n_threads
            cparams.n_threads_batch = n_threads
        self._ctx = lib.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            lib.llama_model_free(self._model)
            raise EagerError(f"llama.cpp could not create a context of {n_ctx} cells for {model_path}")
        self._memory = lib.llama_get_memory(self._ctx)
        self.n_ctx = lib.llama_n_ctx(self._ctx)
        self.n_batch = n_batch
        self.max_sequences = max_sequences
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self._slots = SequenceSlots(max_sequences)
        self.tokens_decoded = 0
        self.decode_calls = 0

    # -- sequences -----------------------------------------------------------------

    def new_sequence(self) -> int:
        return self._slots.take()

    def fork(self, seq: int) -> int:
        child = self._slots.take()
        self._lib.llama_memory_seq_cp(self._memory, seq, child, -1, -1)
        self._slots.length[child] = self._slots.length[seq]
        return child

    def release(self, seq: int) -> None:
        self._lib.llama_memory_seq_rm(self._memory, seq, -1, -1)
        self._slots.give_back(seq)

    def sequence_length(self, seq: int) -> int:
        return self._slots.length[seq]

    # -- the forward pass ------------------------------------------------------------

    def step(self, items: Sequence[StepItem]) -> np.ndarray:
        """Append every item's tokens in one llama_decode; logits rows in item order."""
        batch = self._batch
        lengths = self._slots.length
        n = 0
        output_rows: list[int] = []
        for item in items:
            pos = lengths[item.seq]
            last = len(item.tokens) - 1
            for i, token in enumerate(item.tokens):
                batch.token[n] = token
                batch.pos[n] = pos + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = item.seq
                batch.logits[n] = item.want_logits and i == last
                n += 1
            if item.want_logits:
                output_rows.append(n - 1)
        if n > self.n_batch:
            raise ValueError(f"step of {n} tokens exceeds n_batch={self.n_batch}")
        batch.n_tokens = n
        status = self._lib.llama_decode(self._ctx, batch)
        self.decode_calls += 1
        if status == 1:
            raise CacheFull(f"no KV slot for {n} tokens")
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
        self.tokens_decoded += n
        for item in items:
            lengths[item.seq] += len(item.tokens)
        return self._read_logits(output_rows)

    def _read_logits(self, rows: list[int]) -> np.ndarray:
        out = np.empty((len(rows), self.vocab_size), dtype=np.float32)
        for r, batch_index in enumerate(rows):
            ptr = self._lib.llama_get_logits_ith(self._ctx, batch_index)
            out[r] = np.ctypeslib.as_array(ptr, shape=(self.vocab_size,))
        return out

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._lib.llama_model_free(self._model)
            self._ctx = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass
