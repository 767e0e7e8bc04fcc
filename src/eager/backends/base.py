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
    cells_in_use: int  # cache cells some sequence holds (a shared prefix once)
    free_sequences: int  # sequence handles not in use

    def new_sequence(self) -> int: ...

    def step(self, items: Sequence[StepItem]) -> np.ndarray: ...

    def fork(self, seq: int) -> int: ...

    def release(self, seq: int) -> None: ...

    def close(self) -> None: ...


class _Segment:
    """Cells appended to one sequence between forks; shared by every sequence forked after them."""

    __slots__ = ("parent", "cells", "holders")

    def __init__(self, parent: "_Segment | None") -> None:
        self.parent = parent
        self.cells = 0
        self.holders = 1  # sequences and child segments that reference it


class SequenceSlots:
    """Hands out sequence ids 0..n-1 and takes them back; tracks lengths and cells in use.

    Cells are counted as a unified cache holds them: a fork shares every cell
    of its parent, and a cell is free once no sequence references it. Each
    sequence points at a chain of segments; a fork ends the parent's current
    segment and starts one for each side, so appending, forking and releasing
    cost O(1) (a release walks up only the segments it alone held).
    """

    def __init__(self, n: int) -> None:
        self._free = list(range(n - 1, -1, -1))
        self.length: dict[int, int] = {}
        self._segment: dict[int, _Segment] = {}
        self.cells_in_use = 0

    def take(self) -> int:
        if not self._free:
            raise RuntimeError("no free sequence slot; the scheduler admitted too many sequences")
        seq = self._free.pop()
        self.length[seq] = 0
        self._segment[seq] = _Segment(None)
        return seq

    def fork(self, seq: int) -> int:
        child = self.take()
        shared = self._segment[seq]
        shared.holders += 1  # now held by two new segments (one was counted already)
        self._segment[seq] = _Segment(shared)
        self._segment[child] = _Segment(shared)
        self.length[child] = self.length[seq]
        return child

    def append(self, seq: int, n: int) -> None:
        self.length[seq] += n
        self._segment[seq].cells += n
        self.cells_in_use += n

    def give_back(self, seq: int) -> None:
        del self.length[seq]
        segment = self._segment.pop(seq)
        while segment is not None:
            segment.holders -= 1
            if segment.holders:
                break
            self.cells_in_use -= segment.cells
            segment = segment.parent
        self._free.append(seq)

    @property
    def in_use(self) -> int:
        return len(self.length)

    @property
    def free(self) -> int:
        return len(self._free)
