"""The remote driver: branch streams in, the brancher's rules once per step of a tree.

A *segment* is one streaming ``/v1/completions`` request for one branch,
over the prompt plus the branch's tokens so far (``max_tokens`` = what the
branch has left, ``logprobs=K``, a seed from the branch's own generator).
Every streamed token lands in its branch's queue with its top-K
log-probabilities.

Steps. The local engine decodes every live branch of a tree in one batched
step, so at step s every live branch is at completion position s. This
driver keeps that: a tree advances to step s only when each of its live
branches has its token for s (or has ended), and then calls
:func:`eager.core.brancher.advance` once with all of them, in branch order.
So the window W, the cap M within a step and the P99 history see the same
steps as on the local engine, whatever order the streams arrive in, and the
same seed gives the same tree at any concurrency.

Forks. Where the brancher forks a branch, its parent takes the top-1 token
and a new child the top-2. The child is a new segment, whose prefix the
server's prefix cache already holds. The parent keeps its stream when the
server had drawn the top-1 token there; otherwise its stream is closed, its
queued tokens are dropped, and a new segment starts after the top-1 token.

A branch whose queue runs :data:`LOOKAHEAD` tokens ahead of its tree while
a sibling waits for a connection slot closes its stream and resumes later
from what it has, so slots go to the branches that hold the tree back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from eager.core import brancher
from eager.core.results import GenerationResult, StepStats, result_of
from eager.core.tree import Branch, Status, Tree, TreeRequest
from eager.errors import EagerError
from eager.remote.http import Http, Transient
from eager.remote.logprobs import StreamedToken, finish_reason, first_choice, no_logprobs_error, parse_choice, token_entropies, token_entropy
from eager.remote.server import Server
from eager.remote.steps import Effects, Finish, Received, Row

log = logging.getLogger(__name__)

LOOKAHEAD = 64  # tokens a branch may stream ahead of its tree while a sibling waits for a slot


class RemoteGenerationError(EagerError):
    """Generation stopped (server gone after retries, or a hard error).

    ``results`` holds one entry per prompt: the finished ones, None for the rest.
    """

    def __init__(self, message: str, results: list[GenerationResult | None]) -> None:
        super().__init__(message)
        self.results = results


@dataclass
class RemoteStats:
    """What the server did beyond the tokens a result counts."""

    requests: int = 0  # completion requests (segments), retries included
    streamed_tokens: int = 0  # tokens received, the ones dropped at forks included
    dropped_tokens: int = 0  # received but never used (queued past a fork that replaced them)
    prompt_tokens_sent: int = 0  # prompt + prefix tokens of all requests (id prompts only)
    cached_prompt_tokens: int = 0  # of those, what the server says its cache served (where it says)
    retries: int = 0
    peak_streams: int = 0  # streams open at once, at most
    parked: int = 0  # streams closed because their branch ran ahead while a sibling waited for a slot


class RemoteDriver:
    """Grows trees on a probed :class:`Server` over one :class:`Http` client."""

    def __init__(
        self,
        server: Server,
        http: Http,
        *,
        max_concurrency: int = 16,
        on_step: Callable[[StepStats], None] | None = None,
        on_result: Callable[[int, GenerationResult], None] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise EagerError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if server.vocab is None:
            raise EagerError("the server is not probed yet: use eager.remote.connect")
        self.server = server
        self.vocab = server.vocab
        self.http = http
        self.concurrency = min(max_concurrency, server.max_parallel or max_concurrency)
        self.on_step = on_step
        self.on_result = on_result  # each finished tree (position, result), about as it finishes
        self._handed: dict[int, GenerationResult] = {}  # results already given to on_result
        self.stats = RemoteStats()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._queues: dict[Branch, deque[Received | Finish]] = {}
        self._pieces: dict[Branch, list[str]] = {}  # each token's text, for text prompts and end-of-thinking
        self._streams: dict[Branch, asyncio.Task] = {}  # the task streaming for a branch now
        self._open: set[Branch] = set()  # branches whose request is open now
        self._parked: set[Branch] = set()
        self._prompt_text: dict[Tree, str] = {}
        self._request_s: dict[Tree, float] = {}
        self._tasks: set[asyncio.Task] = set()
        self._failure: BaseException | None = None
        self._settled = asyncio.Event()
        self._steps = 0

    # -- the run -----------------------------------------------------------------------

    async def run(self, requests: Sequence[TreeRequest], prompt_texts: Sequence[str] | None = None) -> list[GenerationResult]:
        """Grow a tree per request; ``prompt_texts`` are what text-prompt servers get."""
        texts = prompt_texts if prompt_texts is not None else [r.prompt for r in requests]
        trees = [Tree(r, brancher.get_method(r.method)) for r in requests]
        start = time.perf_counter()
        for tree, text in zip(trees, texts):
            self._start(tree, text)
        while not self._settled.is_set():
            try:
                await asyncio.wait_for(self._settled.wait(), timeout=0.5)
            except TimeoutError:
                pass
            self._report(trees, start)
            if self._failure is None:
                await self._hand_on(trees, start)
        if self._failure is not None:
            await self._cancel_all()
        elif any(t.status is not Status.FINISHED for t in trees):
            self._failure = EagerError("internal error: remote streams ended with trees unfinished")
        self.stats.retries = self.http.retried
        results = await self._results(trees, time.perf_counter() - start)
        if self._failure is not None:
            done = sum(r is not None for r in results)
            failure = self._failure
            message = str(failure) if isinstance(failure, EagerError) else f"{type(failure).__name__}: {failure}"
            raise RemoteGenerationError(f"{message} ({done} of {len(trees)} prompts finished; see .results)", results) from failure
        return results  # type: ignore[return-value]

    def _start(self, tree: Tree, prompt_text: str) -> None:
        tree.status = Status.RUNNING
        tree.started_at = time.perf_counter()
        self._prompt_text[tree] = prompt_text
        self._request_s[tree] = 0.0
        for _ in range(tree.method.initial_branches(tree)):
            branch = tree.new_branch([], [])
            self._pieces[branch] = []
            self._queues[branch] = deque()
            self._spawn(tree, branch)

    def _spawn(self, tree: Tree, branch: Branch) -> None:
        task = asyncio.get_running_loop().create_task(self._stream(tree, branch))
        self._streams[branch] = task
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
        if self._failure is not None or not self._tasks:
            self._settled.set()

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _report(self, trees: list[Tree], start: float) -> None:
        if self.on_step:
            self.on_step(
                StepStats(
                    steps=self._steps,
                    prompts_done=sum(t.status is Status.FINISHED for t in trees),
                    prompts_in_flight=sum(t.status is Status.RUNNING for t in trees),
                    live_branches=sum(len(t.live) for t in trees),
                    generated_tokens=sum(t.generated_tokens for t in trees),
                    elapsed_s=time.perf_counter() - start,
                    preemptions=self.stats.parked,
                )
            )

    async def _hand_on(self, trees: list[Tree], start: float) -> None:
        """Give ``on_result`` the trees finished since the last call, so a caller can record them now."""
        new = [i for i, tree in enumerate(trees) if tree.status is Status.FINISHED and i not in self._handed]
        if self.on_result is None or not new:
            return
        try:
            results = await self._decoded(trees, new, time.perf_counter() - start)
        except EagerError as error:
            log.debug("finished trees not decoded yet (%s): they come with the rest at the end", error)
            return
        for i, result in results.items():
            self._handed[i] = result
            self.on_result(i, result)

    async def _results(self, trees: list[Tree], wall_s: float) -> list[GenerationResult | None]:
        """Finished trees as results (those handed on already as they were)."""
        new = [i for i, tree in enumerate(trees) if tree.status is Status.FINISHED and i not in self._handed]
        try:
            results = {**self._handed, **await self._decoded(trees, new, wall_s)}
        except EagerError:
            if self._failure is None:
                raise
            results = self._handed  # the server is gone: nothing more can be detokenised
        return [results.get(i) for i in range(len(trees))]

    async def _decoded(self, trees: list[Tree], positions: list[int], wall_s: float) -> dict[int, GenerationResult]:
        """The results of finished trees; each prompt's wall_s is its share of ``wall_s`` by request time."""
        if not positions:
            return {}
        decode = await self.vocab.decoder(self.http, [trees[i] for i in positions], self.concurrency)
        total = sum(self._request_s.values()) or 1.0
        for i in positions:
            trees[i].compute_s = wall_s * self._request_s[trees[i]] / total
        return {i: result_of(trees[i], decode, self._own_pieces) for i in positions}

    def _own_pieces(self, branch: Branch) -> list[str]:
        """The streamed texts of the tokens a branch generated itself ([] where they do not line up)."""
        pieces = self._pieces.get(branch, [])
        return pieces[branch.fork_at or 0 :] if len(pieces) == len(branch.token_ids) else []

    # -- one branch's stream, retried --------------------------------------------------

    async def _stream(self, tree: Tree, branch: Branch) -> None:
        """Stream for ``branch`` until it ends, or another task takes over its stream."""
        me = asyncio.current_task()
        failures = 0
        while self._streams.get(branch) is me:
            before = self._position(branch)
            try:
                async with self._slots:
                    if self._streams.get(branch) is me:
                        await self._segment(tree, branch, me)
                return
            except Transient as exc:
                failures = 0 if self._position(branch) > before else failures + 1
                if failures > self.http.config.retries:
                    raise self.http.gave_up(exc) from None
                await self.http.pause(max(failures, 1), exc)

    def _position(self, branch: Branch) -> int:
        """Tokens the branch has, decided or queued."""
        return len(branch.token_ids) + len(self._queues.get(branch, ()))

    async def _segment(self, tree: Tree, branch: Branch, me: asyncio.Task | None) -> None:
        """One request: queue its tokens until the server finishes it, the branch no longer needs it, or it parks."""
        server, started, held = self.server, time.perf_counter(), None
        self._open.add(branch)
        self.stats.peak_streams = max(self.stats.peak_streams, len(self._open))
        try:
            async with self.http.stream(server.completions_url, self._body(tree, branch)) as events:
                self.stats.requests += 1
                async for event in events:
                    choice = first_choice(event, server.url)
                    for token in parse_choice(choice, server.top_k, server.url):
                        if held is not None and not self._push(tree, branch, held, me):
                            return
                        held = await self._received(tree, token)
                    if reason := finish_reason(choice, server.url):
                        self._count_cached(event)
                        await self._finish(tree, branch, held, reason, me)
                        return
            raise Transient(f"stream from {server.url} ended without a finish reason (interrupted?)")
        except Transient:
            if held is not None and not await self.vocab.ends(self.http, held.token):
                self._push(tree, branch, held, me)  # a drawn token is kept; the retry goes on after it
            raise
        finally:
            self._open.discard(branch)
            self._request_s[tree] += time.perf_counter() - started

    def _body(self, tree: Tree, branch: Branch) -> dict:
        request, server = tree.request, self.server
        queued = [item for item in self._queues[branch] if isinstance(item, Received)]
        n_done = len(branch.token_ids) + len(queued)
        if server.id_prompts:
            prompt: list[int] | str = [*request.prompt_ids, *branch.token_ids, *(item.id for item in queued)]
            self.stats.prompt_tokens_sent += len(prompt)
        else:
            prompt = self._prompt_text[tree] + "".join(self._pieces[branch]) + "".join(item.token.text or "" for item in queued)
        cfg = request.sampling
        return {
            "model": server.model,
            "prompt": prompt,
            "max_tokens": cfg.max_tokens - n_done,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "seed": int(branch.rng.integers(0, 2**31 - 1)),  # one draw per request: the same seed, the same tree
            "logprobs": server.top_k,
            "stream": True,
            **server.dialect.request_fields(cfg),
        }

    async def _received(self, tree: Tree, token: StreamedToken) -> Received:
        if not token.candidates:
            raise no_logprobs_error(self.server.url)
        self.stats.streamed_tokens += 1
        top_two, branching = token.candidates[:2], tree.request.branching
        # a fork must tell whether its top-1 and top-2 end the sequence: vLLM sends their ids only
        if self.vocab.lacks_texts(top_two) and tree.n_sequences < branching.max_sequences and token_entropy(token) > branching.theta:
            await self.vocab.learn_texts(self.http, top_two)
        return Received(token, self.vocab.token_id(token))

    async def _finish(self, tree: Tree, branch: Branch, held: Received | None, reason: str, me: asyncio.Task | None) -> None:
        """The server ended the stream: "stop" (end of sequence) or "length"."""
        ends = held is not None and reason == "stop" and await self.vocab.ends(self.http, held.token)
        if held is not None and not self._push(tree, branch, replace(held, ends=ends), me):
            return
        if not ends:
            self._push(tree, branch, Finish("stop" if reason == "stop" else "length"), me)

    def _count_cached(self, event: dict) -> None:
        usage = event.get("usage")
        details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        if isinstance(cached, int) and cached > 0:  # a count the server may send; anything else is ignored
            self.stats.cached_prompt_tokens += cached

    def _push(self, tree: Tree, branch: Branch, item: Received | Finish, me: asyncio.Task | None) -> bool:
        """Queue an item and decide whatever steps it completes; whether this stream should go on."""
        queue = self._queues[branch]
        queue.append(item)
        self._decide_ready_steps(tree)
        if self._streams.get(branch) is not me:
            return False
        if len(queue) >= LOOKAHEAD and self._sibling_waits(tree, branch):
            del self._streams[branch]  # park: free the slot for the branch that holds the tree back
            self._parked.add(branch)
            self.stats.parked += 1
            return False
        return True

    def _sibling_waits(self, tree: Tree, branch: Branch) -> bool:
        """Whether every slot is taken and a sibling the tree waits for has none."""
        if not self._slots.locked():
            return False
        return any(b is not branch and not b.finished and not self._queues[b] and b not in self._open for b in tree.branches)

    # -- steps of a tree ---------------------------------------------------------------

    def _decide_ready_steps(self, tree: Tree) -> None:
        """Advance the tree through every step for which each live branch has its item."""
        while tree.status is Status.RUNNING:
            live = tree.live
            if not live:
                tree.status = Status.FINISHED
                tree.finished_at = time.perf_counter()
                return
            if not all(self._queues[b] for b in live):
                self._resume_parked(tree, live)
                return
            self._decide(tree, [(b, self._queues[b].popleft()) for b in live])

    def _decide(self, tree: Tree, items: list[tuple[Branch, Received | Finish]]) -> None:
        """One step of the tree: what the server ended, then the brancher on every token."""
        step = len(items[0][0].token_ids)
        known = tree.n_sequences
        effects = Effects(self.vocab, self._pieces, step, self._release)
        received = [(branch, item) for branch, item in items if isinstance(item, Received)]
        entropies = token_entropies([item.token for _, item in received]) if received else []
        rows = [Row(branch, item, h, effects) for (branch, item), h in zip(received, entropies)]
        for branch, item in items:
            if isinstance(item, Finish):
                brancher.finish(branch, item.reason, effects)
        brancher.advance(tree, rows, effects)
        self._steps += 1
        for row in rows:
            branch = row.branch
            effects.record_piece(branch, row)
            if not branch.finished and branch.token_ids[-1] != row.sampled:
                self._restart(tree, branch)  # it forked with a top-1 the server had not drawn
        for child in tree.branches[known:]:
            parent = tree.branches[child.parent]
            self._pieces[child] = self._pieces[parent][:step]
            effects.record_piece(child, effects.row_of(parent))
            self._queues[child] = deque()
            if not child.finished:
                self._spawn(tree, child)

    def _restart(self, tree: Tree, branch: Branch) -> None:
        self._release(branch)
        self._spawn(tree, branch)

    def _release(self, branch: Branch) -> None:
        """The branch's stream and queued tokens are of no more use: drop them."""
        queue = self._queues.get(branch)
        if queue:
            self.stats.dropped_tokens += sum(isinstance(item, Received) for item in queue)
            queue.clear()
        self._parked.discard(branch)
        task = self._streams.pop(branch, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _resume_parked(self, tree: Tree, live: list[Branch]) -> None:
        for branch in live:
            if branch in self._parked and len(self._queues[branch]) < LOOKAHEAD // 2:
                self._parked.discard(branch)
                self._spawn(tree, branch)

