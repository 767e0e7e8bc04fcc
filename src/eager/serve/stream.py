"""Streaming: each choice's text as its branch grows, one SSE chunk per event.

A branch's tokens arrive as deltas from the engine loop; the text is decoded
incrementally (a token that ends inside a UTF-8 character waits for the
next). A child's first chunk carries everything it inherited from its parent.
Text that may be the start of a stop string is held back until it is not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from eager.serve.online import Progress, TreeDone
from eager.serve.responses import Format, cut_at_stop, finish_reason


@dataclass
class _ChoiceText:
    tokens: list[int] = field(default_factory=list)
    decoded: int = 0  # tokens already turned into text
    text: str = ""
    sent: str = ""
    finished: bool = False


class ChoiceStreams:
    """The per-choice state of one prompt's part of a streaming response (its choices from ``base``)."""

    def __init__(self, fmt: Format, decode: Callable, stops: tuple[str, ...], base: int = 0) -> None:
        self.fmt, self.decode, self.stops = fmt, decode, stops
        self.choices: dict[int, _ChoiceText] = {}
        self.offset = base  # first choice index of the tree growing now
        self.hold = max((len(s) for s in stops), default=1) - 1

    def on_progress(self, event: Progress) -> list[dict[str, Any]]:
        out = []
        for d in event.branches:
            choice = self.choices.setdefault(self.offset + d.index, _ChoiceText())
            del choice.tokens[d.start :]
            choice.tokens.extend(d.new_tokens)
            piece = self.decode(choice.tokens[choice.decoded :])
            if not piece.endswith("\ufffd"):
                choice.text += piece
                choice.decoded = len(choice.tokens)
            out += self._emit(self.offset + d.index, choice)
        return out

    def _emit(self, index: int, choice: _ChoiceText) -> list[dict[str, Any]]:
        visible, cut = cut_at_stop(choice.text, self.stops)
        if not cut and self.hold:
            visible = visible[: max(len(choice.sent), len(visible) - self.hold)]
        if choice.finished or len(visible) <= len(choice.sent):
            return []
        first = not choice.sent
        piece, choice.sent = visible[len(choice.sent) :], visible
        return [self.fmt.delta(index, piece, None, first)]

    def on_tree_done(self, event: TreeDone) -> list[dict[str, Any]]:
        """The rest of each sequence's text (exact, from the result) and its finish reason."""
        out = []
        for s in event.result.sequences:
            index = self.offset + s.index
            choice = self.choices.setdefault(index, _ChoiceText())
            final = cut_at_stop(s.text, self.stops)[0]
            piece = final[len(choice.sent) :] if final.startswith(choice.sent) else ""
            out.append(self.fmt.delta(index, piece, finish_reason(s, self.stops), not choice.sent))
            choice.sent, choice.finished = final, True
        self.offset += len(event.result.sequences)
        return out


def sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode("utf-8")
