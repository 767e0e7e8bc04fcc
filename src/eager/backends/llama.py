"""The llama.cpp backend, on llama-cpp-python's low-level API.

One context holds every sequence in a unified KV cache, so a fork is a
metadata copy (``llama_memory_seq_cp``): the forked prefix is never computed
again and its cells are shared. Every item of a step goes into ONE
``llama_decode`` call, assembled in numpy buffers that the batch points at;
the rows asked for are read with ``llama_get_logits_ith``.
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


def init_llama():
    """llama-cpp-python, ready for its low-level API: llama.cpp's backend initialised
    once per process and its logs silenced (unless EAGER_LLAMA_LOG is set)."""
    _init_llama_backend()
    return _llama()


def _silence_llama_logs(lib) -> None:
    """Route llama.cpp's chatter to nowhere unless EAGER_LLAMA_LOG is set."""
    if os.environ.get("EAGER_LLAMA_LOG"):
        return

    @lib.llama_log_callback
    def _quiet(level, text, user_data):  # noqa: ARG001
        return None

    _silence_llama_logs.callback = _quiet  # keep a reference: C holds the pointer
    lib.llama_log_set(_quiet, ctypes.c_void_p(0))


def _cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return any(line.startswith("flags") and " amx_tile" in line for line in f)
    except OSError:
        return False


def model_params(lib):
    """llama.cpp's model parameters, with its extra weight buffers off on AMX CPUs.

    A llama-cpp-python built with ``-march=native`` on an AMX CPU routes matrix
    products through ggml's AMX buffers, which crash inside ``llama_decode`` on
    batched steps (seen on Sapphire Rapids under a sandbox). Turning the extra
    buffer types off falls back to the plain CPU kernels; EAGER_EXTRA_BUFTS=1
    keeps them on.
    """
    params = lib.llama_model_default_params()
    if _cpu_has_amx() and os.environ.get("EAGER_EXTRA_BUFTS") != "1":
        params.use_extra_bufts = False
    return params


# The KV cache types offered (llama.cpp's type_k and type_v): the GGML type and its
# bytes per value (q8_0 stores blocks of 32 values in 34 bytes: 32 int8 and an f16 scale)
KV_TYPES = {"f16": ("GGML_TYPE_F16", 2.0), "q8_0": ("GGML_TYPE_Q8_0", 34 / 32)}
# Flash attention (llama.cpp's flash_attn_type); "auto" is llama.cpp's default
FLASH_ATTN = {"auto": "LLAMA_FLASH_ATTN_TYPE_AUTO", "on": "LLAMA_FLASH_ATTN_TYPE_ENABLED", "off": "LLAMA_FLASH_ATTN_TYPE_DISABLED"}


def _choice(table: dict, value: str, name: str):
    if value not in table:
        raise EagerError(f"unknown {name} {value!r}; choose from {', '.join(table)}")
    return table[value]


def _kv_bytes_per_cell(lib, model, kv_type: str) -> int:
    """Bytes one KV cell takes: K and V of every layer, in the cache's type."""
    n_head = lib.llama_model_n_head(model)
    head_dim = lib.llama_model_n_embd(model) // max(n_head, 1)
    values = 2 * lib.llama_model_n_layer(model) * lib.llama_model_n_head_kv(model) * head_dim
    return round(values * KV_TYPES[kv_type][1])


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
            raise EagerError("the model's chat template is not supported by llama.cpp; pass chat=False (a raw prompt)")
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


class _BatchBuffers:
    """A ``llama_batch`` whose arrays are numpy buffers owned here.

    ``llama_batch_init`` gives every token its own malloc'd seq-id array, which
    can only be filled one token at a time through ctypes; here the seq ids
    are one contiguous array (one id per token) and a step fills each field
    with a single slice assignment.
    """

    def __init__(self, lib, n_batch: int) -> None:
        self.token = np.zeros(n_batch, dtype=np.int32)
        self.pos = np.zeros(n_batch, dtype=np.int32)
        self.seq = np.zeros(n_batch, dtype=np.int32)
        self.output = np.zeros(n_batch, dtype=np.int8)
        self._n_seq_id = np.ones(n_batch, dtype=np.int32)
        self._seq_ptrs = self.seq.ctypes.data + self.seq.itemsize * np.arange(n_batch, dtype=np.uintp)
        batch = self.batch = lib.llama_batch()
        batch.token = self.token.ctypes.data_as(ctypes.POINTER(lib.llama_token))
        batch.embd = None
        batch.pos = self.pos.ctypes.data_as(ctypes.POINTER(lib.llama_pos))
        batch.n_seq_id = self._n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        batch.seq_id = self._seq_ptrs.ctypes.data_as(ctypes.POINTER(ctypes.POINTER(lib.llama_seq_id)))
        batch.logits = self.output.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))

    def fill(self, tokens: list[int], positions: list[int], seqs: list[int], outputs: list[int]) -> None:
        n = len(tokens)
        self.token[:n] = tokens
        self.pos[:n] = positions
        self.seq[:n] = seqs
        self.output[:n] = 0
        self.output[outputs] = 1
        self.batch.n_tokens = n


class LlamaBackend:
    """Many sequences in one llama.cpp context, one decode call per step.

    Args:
        model_path: a GGUF file.
        n_ctx: KV cells shared by all sequences (a forked prefix uses its cells once).
        max_sequences: sequences that may exist at once (<= 256).
        n_batch: most tokens in one step (prefill chunks and decodes together).
        n_threads: CPU threads; None: the cores this process may use.
        kv_type: the KV cache's type, a key of :data:`KV_TYPES` (K and V alike).
        flash_attn: "auto", "on" or "off" (:data:`FLASH_ATTN`); a quantized
            cache needs it on (llama.cpp refuses the context otherwise).
    """

    def __init__(
        self,
        model_path: str,
        *,
        n_ctx: int = 8192,
        max_sequences: int = 64,
        n_batch: int = 512,
        n_threads: int | None = None,
        kv_type: str = "f16",
        flash_attn: str = "auto",
    ) -> None:
        if not os.path.isfile(model_path):
            raise EagerError(f"model file not found: {model_path}")
        if not 1 <= max_sequences <= LLAMA_MAX_SEQ:
            raise EagerError(f"llama.cpp holds 1..{LLAMA_MAX_SEQ} sequences at once, asked for {max_sequences}")
        type_name, _ = _choice(KV_TYPES, kv_type, "kv_type")
        flash_name = _choice(FLASH_ATTN, flash_attn, "flash_attn")
        lib = self._lib = _llama()
        _init_llama_backend()

        mparams = model_params(lib)
        self._model = lib.llama_model_load_from_file(model_path.encode("utf-8"), mparams)
        if not self._model:
            raise EagerError(f"llama.cpp could not load {model_path} (not a valid GGUF model?)")
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.vocab_size = lib.llama_vocab_n_tokens(self._vocab)
        self.n_ctx_train = lib.llama_model_n_ctx_train(self._model)
        self.kv_type, self.flash_attn = kv_type, flash_attn
        self.kv_bytes_per_cell = _kv_bytes_per_cell(lib, self._model, kv_type)
        self.tokenizer = LlamaTokenizer(lib, self._model, self._vocab)

        cparams = lib.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = max_sequences
        cparams.kv_unified = True  # one pool of cells: shared prefixes are stored once
        cparams.no_perf = True
        cparams.type_k = cparams.type_v = getattr(lib, type_name)
        cparams.flash_attn_type = getattr(lib, flash_name)
        # llama.cpp's own default (4) oversubscribes small machines: use the cores we may run on
        n_threads = n_threads or len(os.sched_getaffinity(0))
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        self._ctx = lib.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            lib.llama_model_free(self._model)
            raise EagerError(
                f"llama.cpp could not create a context of {n_ctx} cells (kv_type {kv_type}, flash_attn {flash_attn}) for {model_path}"
            )
        self._memory = lib.llama_get_memory(self._ctx)
        self.n_ctx = lib.llama_n_ctx(self._ctx)
        self.n_batch = n_batch
        self.max_sequences = max_sequences
        self._batch = _BatchBuffers(lib, n_batch)
        self._slots = SequenceSlots(max_sequences)
        self.tokens_decoded = 0
        self.decode_calls = 0

    # -- sequences -----------------------------------------------------------------

    def new_sequence(self) -> int:
        return self._slots.take()

    def fork(self, seq: int) -> int:
        child = self._slots.fork(seq)
        self._lib.llama_memory_seq_cp(self._memory, seq, child, -1, -1)
        return child

    def release(self, seq: int) -> None:
        self._lib.llama_memory_seq_rm(self._memory, seq, -1, -1)
        self._slots.give_back(seq)

    def sequence_length(self, seq: int) -> int:
        return self._slots.length[seq]

    @property
    def cells_in_use(self) -> int:
        return self._slots.cells_in_use

    @property
    def free_sequences(self) -> int:
        return self._slots.free

    # -- the forward pass ------------------------------------------------------------

    def step(self, items: Sequence[StepItem]) -> np.ndarray:
        """Append every item's tokens in one llama_decode; logits rows in item order."""
        lengths = self._slots.length
        tokens: list[int] = []
        positions: list[int] = []
        seqs: list[int] = []
        outputs: list[int] = []
        for item in items:
            start, k = lengths[item.seq], len(item.tokens)
            if not k:
                raise ValueError("a step item needs at least one token")
            tokens.extend(item.tokens)
            positions.extend(range(start, start + k))
            seqs.extend([item.seq] * k)
            if item.want_logits:
                outputs.append(len(tokens) - 1)
        n = len(tokens)
        if n > self.n_batch:
            raise ValueError(f"step of {n} tokens exceeds n_batch={self.n_batch}")
        self._batch.fill(tokens, positions, seqs, outputs)
        status = self._lib.llama_decode(self._ctx, self._batch.batch)
        self.decode_calls += 1
        if status == 1:
            raise CacheFull(f"no KV slot for {n} tokens")
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
        self.tokens_decoded += n
        for item in items:
            self._slots.append(item.seq, len(item.tokens))
        return self._read_logits(outputs)

    def _read_logits(self, outputs: list[int]) -> np.ndarray:
        """One row per output, read with ``llama_get_logits_ith`` by batch index.

        The rows are copied on purpose: llama.cpp overwrites its buffer at the
        next decode.
        """
        out = np.empty((len(outputs), self.vocab_size), dtype=np.float32)
        get_row = self._lib.llama_get_logits_ith
        for row, batch_index in enumerate(outputs):
            out[row] = np.ctypeslib.as_array(get_row(self._ctx, batch_index), shape=(self.vocab_size,))
        return out

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._lib.llama_free(self._ctx)
            self._lib.llama_model_free(self._model)
            self._ctx = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass
