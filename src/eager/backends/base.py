"""The backend boundary: a backend turns batches of tokens into logits rows.

A backend knows nothing of EAGER. It holds many sequences in one cache and
offers four operations:

* ``new_sequence()`` -> an empty sequence handle;
* ``step(items)`` -> for a batch of (sequence, token ids, want_logits) items,
  appends the tokens to their sequences in ONE forward pass and returns one
  logits row per item that asked for one, in item order. A decode is an item
  with one token; a prompt prefill (or a chunk of one) is an item with many;
* ``fork(seq)`` -> a new sequence sharing the whole cached prefix of ``seq``;
* ``release(seq)`` frees a sequence.

Entropy, sampling, when to fork and budgets all live above this boundary.
The tokenizer (text at the edges) is a separate object the backend exposes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np


class CacheFull(Exception):
    """The backend's cache has no room for this batch; nothing was written."""


@dataclass(frozen=True)
class StepItem:
    """One entry of a batched forward pass."""

    seq: int
    tokens: Sequence[int]
    want_logits: bool = True


class Tokenizer(Protocol):
    """Text at the edges: prompts in, completions out."""

    eog_ids: frozenset[int]

    def encode_prompt(self, text: str, chat: bool) -> list[int]: ...

    def encode_marker(self, text: str) -> list[list[int]]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...


class Backend(Protocol):
    tokenizer: Tokenizer
    vocab_size: int
    n_ctx: int  # cache cells shared by all sequences
    n_batch: int  # most tokens one step may carry (prefill chunks and decodes together)
    max_sequences: int  # sequences that may exist at once
    kv_bytes_per_cell: int  # memory one cache cell takes (K and V of every layer)
    tokens_decoded: int  # every token ever sent to the model, prompts included

    def new_sequence(self) -> int: ...

    def step(self, items: Sequence[StepItem]) -> np.ndarray: ...

    def fork(self, seq: int) -> int: ...

    def release(self, seq: int) -> None: ...

    def close(self) -> None: ...


class SequenceSlots:
    """Hands out sequence ids 0..n-1 and takes them back; tracks lengths."""

    def __init__(self, n: int) -> None:
        self._free = list(range(n - 1, -1, -1))
        self.length: dict[int, int] = {}

    def take(self) -> int:
        if not self._free:
            raise RuntimeError("no free sequence slot; the scheduler admitted too many sequences")
        seq = self._free.pop()
        self.length[seq] = 0
        return seq

    def give_back(self, seq: int) -> None:
        del self.length[seq]
        self._free.append(seq)

    @property
    def in_use(self) -> int:
        return len(self.length)
