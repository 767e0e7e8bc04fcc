"""Token ids and texts of one server's tokens.

Where the server streams token ids (vLLM, llama-server), ids are exact and
text comes from its detokenize endpoint. Where it streams text only
(llama-cpp-python, SGLang), :class:`PieceTable` gives each piece of text a
provisional negative id while streaming and maps pieces back to real ids
once the run is over.

Servers do not list their end-of-generation ids, so whether a token ends a
sequence goes by its text: a known end marker, or a control token the
server renders as no bytes (llama-server).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Callable, Iterable, Sequence

from eager.core.tree import Tree
from eager.remote.dialects import Dialect
from eager.remote.http import Http, gather_limited
from eager.remote.logprobs import Candidate, StreamedToken, looks_like_end


class PieceTable:
    """Ids for streamed token text, for servers that send text only.

    While streaming, a piece not seen before gets a provisional negative id
    (no request is made mid-stream: a one-request-at-a-time server would
    stall). :meth:`resolve` then tokenises each new piece once; a piece that
    is exactly one token gets that id, others keep their negative id.
    """

    def __init__(self) -> None:
        self._id_of: dict[str, int] = {}
        self._piece_of: dict[int, str] = {}
        self._provisional: dict[int, str] = {}
        self._lock = threading.Lock()  # a Server may serve runs in several threads

    def id_for(self, piece: str) -> int:
        with self._lock:
            if piece not in self._id_of:
                provisional = -1 - len(self._piece_of)
                self._provisional[provisional] = piece
                self._id_of[piece] = provisional
                self._piece_of[provisional] = piece
            return self._id_of[piece]

    def unresolved(self) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._provisional.items())

    def settle(self, provisional: int, real: int) -> None:
        with self._lock:
            piece = self._provisional.pop(provisional)
            self._id_of[piece] = real
            self._piece_of.setdefault(real, piece)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._piece_of.get(i, "") for i in ids)


class Vocab:
    """What a streamed token's id and text are on one server."""

    def __init__(self, dialect: Dialect, id_prompts: bool) -> None:
        self.dialect = dialect
        self.id_prompts = id_prompts  # ids are the server's own (else provisional, from text)
        self.pieces = PieceTable()
        self._text_of_id: dict[int, str] = {}
        self._fetching: dict[int, asyncio.Future] = {}  # one request per id, however many streams ask at once

    # -- while streaming (no requests) -------------------------------------------

    def token_id(self, token: StreamedToken) -> int:
        if self.id_prompts and token.id is not None:
            return int(token.id)
        return self.pieces.id_for(token.text or "")

    def candidate_id(self, candidate: Candidate) -> int:
        if self.id_prompts and candidate.id is not None:
            return int(candidate.id)
        return self.pieces.id_for(candidate.text or "")

    def candidate_text(self, candidate: Candidate) -> str:
        if candidate.text is not None:
            return candidate.text
        return self._text_of_id.get(candidate.id, "") if candidate.id is not None else ""

    def forced_end(self, candidate: Candidate) -> bool:
        """Whether a token forced at a fork (top-1 or top-2) ends the sequence.

        On text-only servers a special token and a partial UTF-8 byte both
        render as empty text, so an empty piece counts as an end there.
        """
        if candidate.empty_bytes:
            return True
        text = self.candidate_text(candidate)
        return looks_like_end(text) or (text == "" and not self.id_prompts)

    # -- lookups that may ask the server ---------------------------------------------

    def lacks_texts(self, candidates: Iterable[Candidate]) -> bool:
        """Whether some candidates came as ids only (vLLM), so their texts must be fetched."""
        return self.dialect.streams_ids and any(c.text is None and c.id is not None for c in candidates)

    async def learn_texts(self, http: Http, candidates: Iterable[Candidate]) -> None:
        """Fetch the text of candidates sent as ids only (vLLM), so a fork can tell an end token."""
        for candidate in candidates:
            if candidate.text is None and candidate.id is not None:
                await self.piece_text(http, candidate.id)

    async def piece_text(self, http: Http, token_id: int) -> str:
        """One token's text through the detokenize endpoint, cached; one request per id."""
        if token_id in self._text_of_id:
            return self._text_of_id[token_id]
        fetching = self._fetching.get(token_id)
        if fetching is None or fetching.get_loop() is not asyncio.get_running_loop():
            fetching = self._fetching[token_id] = asyncio.ensure_future(self._fetch_text(http, token_id))
        return await asyncio.shield(fetching)

    async def _fetch_text(self, http: Http, token_id: int) -> str:
        try:
            self._text_of_id[token_id] = await self.dialect.detokenize(http, [token_id])
            return self._text_of_id[token_id]
        finally:
            self._fetching.pop(token_id, None)

    async def ends(self, http: Http, token: StreamedToken) -> bool:
        """Whether the token the server sent just before finishing with "stop" is its end token.

        vLLM and llama-server stream the end-of-generation token itself; a
        sequence does not keep it. Other servers end on the token before.
        """
        if token.empty_bytes:
            return True
        if self.id_prompts and token.id is not None and self.dialect.streams_ids:
            return looks_like_end(await self.piece_text(http, int(token.id)))
        return looks_like_end(token.text)

    # -- text out, once a run is over ------------------------------------------------

    async def decoder(self, http: Http, trees: Sequence[Tree], limit: int) -> Callable[[Sequence[int]], str]:
        """A ``decode(ids) -> text`` for every sequence (and own part) of ``trees``."""
        if not self.id_prompts:
            await self._resolve_pieces(http, trees, limit)
            for tree in trees:
                for branch in tree.branches:
                    branch.token_ids[:] = [self._settled(t) for t in branch.token_ids]
            return self.pieces.decode
        wanted = sorted({tuple(ids) for tree in trees for b in tree.branches for ids in (b.token_ids, b.token_ids[b.fork_at or 0 :]) if ids})
        texts = await gather_limited([lambda ids=ids: self.dialect.detokenize(http, list(ids)) for ids in wanted], limit)
        table = {(): "", **dict(zip(wanted, texts))}
        return lambda ids: table[tuple(ids)]

    async def _resolve_pieces(self, http: Http, trees: Sequence[Tree], limit: int) -> None:
        """Tokenise each provisional piece once; a piece that is exactly one token gets its id."""
        if not trees:
            return
        prefix = await self.dialect.tokenize(http, "", add_special=True, parse_special=False)  # a BOS some endpoints add
        pending = [(p, piece) for p, piece in self.pieces.unresolved() if piece]
        calls = [lambda piece=piece: self.dialect.tokenize(http, piece, add_special=False, parse_special=False) for _, piece in pending]
        for (provisional, _), ids in zip(pending, await gather_limited(calls, limit)):
            if ids[: len(prefix)] == prefix:
                ids = ids[len(prefix) :]
            if len(ids) == 1:
                self.pieces.settle(provisional, ids[0])

    def _settled(self, token_id: int) -> int:
        return self.pieces.id_for(self.pieces.decode([token_id])) if token_id < 0 else token_id
