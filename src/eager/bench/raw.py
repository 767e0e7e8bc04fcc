"""The baseline: a minimal batched decode loop on llama-cpp-python's low-level API.

It replays the schedule of an engine run (how many sequences each step
decoded), so both sides decode exactly the same batches.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from eager.core.results import GenerationResult
from eager.errors import EagerError


def decode_schedule(result: GenerationResult) -> list[int]:
    """Sequences decoded at each step after the prefill, read off a parallel result.

    A branch that ended on "length" decoded all its tokens but the last (that
    one was sampled and never fed back); one that ended on "stop" decoded all
    of them (the end-of-generation token is never appended).
    """
    decoded = [len(s.token_ids) - (s.finish_reason == "length") for s in result.sequences]
    return [sum(d > step for d in decoded) for step in range(max(decoded, default=0))]


def sampled_tokens(M: int, schedule: Sequence[int]) -> int:
    """Tokens drawn from logits: M from the prompt's row, then one per decoded sequence."""
    return M + sum(schedule)


class RawLoop:
    """The baseline: llama-cpp-python's low-level API and nothing of ours.

    Its own model and context from the same file, with the backend's settings;
    one prefill, M-1 ``llama_memory_seq_cp`` forks, then at each step a batch
    of live sequences filled token by token into a ``llama_batch_init`` batch,
    one ``llama_decode``, and a greedy argmax over ``llama_get_logits_ith``
    (greedy: the tokens do not change the work, only the batch shapes do).
    """

    def __init__(self, model_path: str, *, n_ctx: int, n_batch: int, n_seq_max: int, n_threads: int) -> None:
        from eager.backends.llama import init_llama, model_params

        lib = self.lib = init_llama()  # the backend's log silencing, once per process
        self.model = lib.llama_model_load_from_file(model_path.encode("utf-8"), model_params(lib))
        if not self.model:
            raise EagerError(f"llama.cpp could not load {model_path}")
        cparams = lib.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = n_ctx, n_batch, n_batch, n_seq_max
        cparams.kv_unified, cparams.no_perf = True, True
        cparams.n_threads = cparams.n_threads_batch = n_threads
        self.ctx = lib.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise EagerError(f"llama.cpp could not create a context of {n_ctx} cells")
        self.memory = lib.llama_get_memory(self.ctx)
        self.n_batch = n_batch
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        self.batch = lib.llama_batch_init(n_batch, 0, 1)

    def _decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """entries: (token, position, sequence, wants logits)."""
        batch = self.batch
        for i, (token, pos, seq, wants) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = wants
        batch.n_tokens = len(entries)
        status = self.lib.llama_decode(self.ctx, batch)
        if status != 0:
            raise EagerError(f"raw loop: llama_decode returned {status}")

    def _argmax(self, i: int) -> int:
        row = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
        return int(np.argmax(row))

    def steps(self, prompt_ids: Sequence[int], M: int, schedule: Sequence[int]) -> Iterator[None]:
        """One step per ``next()``: first the prefill and the forks, then each scheduled decode."""
        lib = self.lib
        lib.llama_memory_clear(self.memory, True)
        try:
            n = len(prompt_ids)
            for lo in range(0, n, self.n_batch):
                chunk = prompt_ids[lo : lo + self.n_batch]
                self._decode([(t, lo + i, 0, lo + i == n - 1) for i, t in enumerate(chunk)])
            first = self._argmax(len(chunk) - 1)
            for seq in range(1, M):
                lib.llama_memory_seq_cp(self.memory, 0, seq, -1, -1)
            pending = [first] * M
            yield
            for step, live in enumerate(schedule):
                self._decode([(pending[s], n + step, s, True) for s in range(live)])
                pending[:live] = [self._argmax(s) for s in range(live)]
                yield
        finally:
            lib.llama_memory_clear(self.memory, True)

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.lib.llama_model_free(self.model)
            self.ctx = None
