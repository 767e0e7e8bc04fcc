"""A deterministic mock backend for testing the engine's rules without a model.

Logits are a pure function of a sequence's token history (prompt included),
so the same history always gives the same row, whichever batch it sits in.
The cache is modelled cell by cell with reference counts: a fork shares its
parent's cells, a release frees the cells no other sequence uses, and a step
that needs more cells than are free raises :class:`CacheFull` and changes
nothing, as llama.cpp does.
"""

from __future__ import annotations

import zlib
from typing import Callable, Sequence

import numpy as np

from eager.backends.base import CacheFull, SequenceSlots, StepItem

EOG_ID = 0
THINK_END_ID = 1  # the mock's "</think>" token
FIRST_TEXT_ID = 2

LogitsFn = Callable[[tuple[int, ...]], np.ndarray]


def default_logits(vocab_size: int) -> LogitsFn:
    """Pseudo-random rows whose sharpness varies, and an end that grows likely.

    About one row in four is nearly flat (high entropy); the others are peaked.
    The end-of-generation logit rises with the history's length so sequences
    finish on their own after a few dozen tokens.
    """

    def logits(history: tuple[int, ...]) -> np.ndarray:
        seed = zlib.crc32(np.asarray(history, dtype=np.int64).tobytes())
        rng = np.random.default_rng(seed)
        sharpness = 0.3 if rng.random() < 0.25 else 4.0
        row = rng.normal(0.0, sharpness, size=vocab_size)
        row[EOG_ID] = -4.0 + 0.25 * len(history)
        row[THINK_END_ID] = -10.0
        return row.astype(np.float32)

    return logits


class MockTokenizer:
    """One token per character; id 0 ends generation, id 1 is "</think>"."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.eog_ids = frozenset({EOG_ID})

    def encode_prompt(self, text: str, chat: bool) -> list[int]:
        span = self.vocab_size - FIRST_TEXT_ID
        return [FIRST_TEXT_ID + ord(c) % span for c in text]

    def encode_marker(self, text: str) -> list[list[int]]:
        return [[THINK_END_ID]] if text == "</think>" else [self.encode_prompt(text, chat=False)]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join("</think>" if t == THINK_END_ID else chr(0x61 + (t - FIRST_TEXT_ID) % 26) for t in token_ids)


class MockBackend:
    """Implements the backend protocol over a pure logits function.

    Counters let tests check what the engine asked for: ``tokens_decoded``
    (every token sent to a step, prompts included), ``decode_calls`` and
    ``batch_sizes`` (items per step), ``forks``.
    """

    def __init__(
        self,
        vocab_size: int = 32,
        *,
        logits_fn: LogitsFn | None = None,
        n_ctx: int = 4096,
        max_sequences: int = 64,
        n_batch: int = 512,
    ) -> None:
        self.vocab_size = vocab_size
        self.tokenizer = MockTokenizer(vocab_size)
        self.logits_fn = logits_fn or default_logits(vocab_size)
        self.n_ctx = n_ctx
        self.max_sequences = max_sequences
        self.n_batch = n_batch
        self.kv_bytes_per_cell = 2 * vocab_size  # a made-up size: tests only compare cell counts
        self._slots = SequenceSlots(max_sequences)
        self._history: dict[int, list[int]] = {}
        self._cells: dict[int, list[int]] = {}  # seq -> cell ids it uses
        self._refcount: dict[int, int] = {}
        self._next_cell = 0
        self.tokens_decoded = 0
        self.decode_calls = 0
        self.batch_sizes: list[int] = []
        self.forks = 0

    @property
    def cells_in_use(self) -> int:
        return len(self._refcount)

    @property
    def free_sequences(self) -> int:
        return self._slots.free

    @property
    def ledger_cells(self) -> int:
        """Cells in use by the O(1) segment count every backend can use (tests compare it with the cell model)."""
        return self._slots.cells_in_use

    def new_sequence(self) -> int:
        seq = self._slots.take()
        self._history[seq] = []
        self._cells[seq] = []
        return seq

    def fork(self, seq: int) -> int:
        child = self._slots.fork(seq)
        self._history[child] = list(self._history[seq])
        self._cells[child] = list(self._cells[seq])
        for cell in self._cells[child]:
            self._refcount[cell] += 1
        self.forks += 1
        return child

    def release(self, seq: int) -> None:
        for cell in self._cells.pop(seq):
            self._refcount[cell] -= 1
            if self._refcount[cell] == 0:
                del self._refcount[cell]
        del self._history[seq]
        self._slots.give_back(seq)

    def step(self, items: Sequence[StepItem]) -> np.ndarray:
        n = sum(len(item.tokens) for item in items)
        if n > self.n_batch:
            raise ValueError(f"step of {n} tokens exceeds n_batch={self.n_batch}")
        if self.cells_in_use + n > self.n_ctx:
            raise CacheFull(f"no room for {n} tokens")
        rows = []
        for item in items:
            self._slots.append(item.seq, len(item.tokens))
            self._history[item.seq].extend(int(t) for t in item.tokens)
            for _ in item.tokens:
                self._cells[item.seq].append(self._next_cell)
                self._refcount[self._next_cell] = 1
                self._next_cell += 1
            if item.want_logits:
                rows.append(self.logits_fn(tuple(self._history[item.seq])))
        self.tokens_decoded += n
        self.decode_calls += 1
        self.batch_sizes.append(len(items))
        return np.stack(rows) if rows else np.empty((0, self.vocab_size), dtype=np.float32)

    def close(self) -> None:
        return None
