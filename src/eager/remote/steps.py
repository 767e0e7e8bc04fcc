"""A step of a remote tree, as the brancher sees it.

Each live branch brings one item to a step: a :class:`Received` token (the
server's draw, with its top-K) or a :class:`Finish` (the server ended the
stream with no token there). A received token is a brancher :class:`Row`,
whose plain sample is the server's draw; :class:`Effects` are the brancher's
side effects here: no cache to fork, end-of-thinking told by text.

Servers do not publish their end-of-generation ids, so a token that ends a
sequence (the server's last draw before "stop", or a top-1/top-2 forced at a
fork whose text is an end marker) reaches the brancher as :data:`END`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from eager.core.tree import Branch, Tree
from eager.remote.logprobs import Candidate, StreamedToken
from eager.remote.vocab import Vocab

END = -(2**31)  # the id of any token that ends a sequence, as the brancher gets it


@dataclass(frozen=True)
class Received:
    """A streamed token, ready for its step."""

    token: StreamedToken
    id: int  # the server's id, or a provisional one from the text
    ends: bool = False  # the server finished the sequence with it: an end-of-generation token


@dataclass(frozen=True)
class Finish:
    """The server ended the stream before this step, without a token for it."""

    reason: str  # "stop" or "length"


class Row:
    """A received token as a brancher row: the server's draw is plain sampling's token."""

    def __init__(self, branch: Branch, item: Received, entropy: float, effects: "Effects") -> None:
        self.branch = branch
        self.entropy = float(entropy)
        self.sampled = END if item.ends else item.id
        self._token = item.token
        self._vocab = effects.vocab
        self._pieces = {item.id: item.token.text or ""}  # token id -> its text, for this step
        effects.add(self)

    def sample(self) -> int:
        return self.sampled

    def top_two(self) -> tuple[int, int]:
        first, second = (self._forced(c) for c in self._token.candidates[:2])
        return first, second

    def top_two_probs(self) -> tuple[float, float]:
        first, second = (math.exp(c.logprob) for c in self._token.candidates[:2])
        return first, second

    def _forced(self, candidate: Candidate) -> int:
        if self._vocab.forced_end(candidate):
            return END
        token_id = self._vocab.candidate_id(candidate)
        self._pieces[token_id] = self._vocab.candidate_text(candidate)
        return token_id

    def piece(self, token_id: int) -> str:
        return self._pieces.get(token_id, "")


class Effects:
    """The brancher's side effects for one step of a remote tree (its ``Driver``)."""

    def __init__(self, vocab: Vocab, pieces: dict[Branch, list[str]], step: int, release: Callable[[Branch], None]) -> None:
        self.vocab = vocab
        self.step = step
        self._pieces = pieces  # each branch's token texts before this step
        self._release = release
        self._rows: dict[Branch, Row] = {}

    def add(self, row: Row) -> None:
        self._rows[row.branch] = row

    def row_of(self, branch: Branch) -> Row:
        return self._rows[branch]

    def record_piece(self, branch: Branch, row: Row) -> None:
        """After the step: the text of the token the branch took from ``row``, if it took one."""
        if len(branch.token_ids) > self.step:
            self._pieces[branch].append(row.piece(branch.token_ids[-1]))

    def fork_sequence(self, parent: Branch) -> int | None:
        return None  # the server's prefix cache shares the prefix

    def is_end(self, token: int) -> bool:
        return token == END

    def ends_thinking(self, tree: Tree, branch: Branch, token: int) -> bool:
        """Whether the branch's text followed by ``token``'s contains the marker (in its last characters)."""
        marker = tree.request.branching.end_of_thinking
        source = branch if branch in self._rows else tree.branches[branch.parent]  # a new child: its parent's
        last = self._rows[source].piece(token)
        return marker in tail_text(self._pieces[source], len(marker)) + last

    def release(self, branch: Branch) -> None:
        self._release(branch)


def tail_text(pieces: Sequence[str], n_chars: int) -> str:
    """The last pieces joined, at least ``n_chars`` long where there is that much."""
    tail: list[str] = []
    size = 0
    for piece in reversed(pieces):
        tail.append(piece)
        size += len(piece)
        if size >= n_chars:
            break
    return "".join(reversed(tail))
