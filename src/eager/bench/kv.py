"""(g) The KV cache's type and flash attention, side by side in one run.

Each setting of :data:`KV_SETTINGS` gets its own llama.cpp context holding the
KV memory of ``ctx`` f16 cells: f16 gets ``ctx`` cells, q8_0 (34 bytes per 32
values against 64) about 1.9 times as many. On the same questions each
setting reports:

* prompts in flight (most and mean over steps) and preemptions of parallel
  sampling, M sequences per question, every question given at once: how many
  trees its memory holds together;
* tokens/s of that run (the settings take turns within each repeat, so they
  meet the same load from other work);
* an accuracy proxy against :data:`REFERENCE` (f16, flash attention on):
  greedy decoding of each question, ``greedy_agreement`` the share of the
  reference's tokens before the first difference (1.0: the same text), and
  ``entropy_mad`` the mean absolute difference of the top-20 entropies, in
  nats, at the positions where both had seen the same tokens (the numbers
  EAGER's forks compare with theta).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eager.backends.llama import KV_TYPES, LLAMA_MAX_SEQ, LlamaBackend
from eager.bench.clock import StepClock, spread, steady_seconds
from eager.bench.config import BenchConfig
from eager.core.results import GenerationResult

# (kv_type, flash_attn); q8_0 with flash attention off is refused by llama.cpp
KV_SETTINGS = (("f16", "on"), ("f16", "off"), ("q8_0", "on"))
REFERENCE = KV_SETTINGS[0]


# llama.cpp rounds a context's cells up to a multiple of this
CELL_PADDING = 256


def cells_in_budget(ctx: int, kv_type: str) -> int:
    """Cells of ``kv_type`` that fit in the memory of ``ctx`` f16 cells (rounded down to
    llama.cpp's padding, so the padded context stays within that memory)."""
    cells = int(ctx * KV_TYPES["f16"][1] / KV_TYPES[kv_type][1])
    return ctx if cells <= ctx else max(cells // CELL_PADDING * CELL_PADDING, ctx)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def greedy_agreement(reference: Sequence[GenerationResult], results: Sequence[GenerationResult]) -> dict[str, float]:
    """Greedy outputs against the reference's: shared token share and entropy gap, averaged.

    The entropy at position i was taken after the first i tokens, so both
    runs saw the same context up to the first differing token, included.
    """
    shares, gaps = [], []
    for ref, got in zip(reference, results):
        a, b = ref.sequences[0], got.sequences[0]
        same = common_prefix(a.token_ids, b.token_ids)
        shares.append(same / len(a.token_ids) if a.token_ids else float(not b.token_ids))
        gaps += [abs(x - y) for x, y in zip(a.entropies[: same + 1], b.entropies[: same + 1])]
    return {"greedy_agreement": float(np.mean(shares)), "entropy_mad": float(np.mean(gaps)) if gaps else 0.0}


def _open(path: Path, setting: tuple[str, str], cfg: BenchConfig, sequences: int) -> LlamaBackend:
    kv_type, flash_attn = setting
    return LlamaBackend(
        str(path),
        n_ctx=cells_in_budget(cfg.ctx, kv_type),
        max_sequences=sequences,
        n_batch=max(cfg.n_batch, sequences),
        n_threads=cfg.n_threads,
        kv_type=kv_type,
        flash_attn=flash_attn,
    )


def _greedy(backend: LlamaBackend, prompts: Sequence[str], cfg: BenchConfig) -> list[GenerationResult]:
    from eager.api import generate

    return generate(list(prompts), backend=backend, method="parallel", M=1, temperature=0.0, max_tokens=cfg.sizes.kv_tokens, seed=cfg.seed)


def _sampled(backend: LlamaBackend, prompts: Sequence[str], cfg: BenchConfig, clock: StepClock) -> list[GenerationResult]:
    from eager.api import generate

    return generate(
        list(prompts), backend=backend, method="parallel", M=cfg.M, max_tokens=cfg.sizes.kv_tokens, seed=cfg.seed, on_step=clock
    )


def _row(backend: LlamaBackend, results: list[GenerationResult], runs: list[list[float]], clock: StepClock) -> dict[str, Any]:
    tokens = sum(r.generated_tokens for r in results)
    seconds = steady_seconds(runs)
    return {
        "kv_type": backend.kv_type,
        "flash_attn": backend.flash_attn,
        "ctx": backend.n_ctx,
        "kv_bytes_per_cell": backend.kv_bytes_per_cell,
        "kv_mib": backend.n_ctx * backend.kv_bytes_per_cell / 2**20,
        "tokens": tokens,
        "seconds": seconds,
        "seconds_runs": spread([sum(run) for run in runs]),
        "tokens_per_s": tokens / seconds,
        **clock.occupancy(),
    }


def measure_kv_options(path: Path, prompts: Sequence[str], cfg: BenchConfig) -> dict[str, Any]:
    """Every setting of :data:`KV_SETTINGS` on the same questions: one row each, the reference first."""
    sequences = min(cfg.M * len(prompts), LLAMA_MAX_SEQ)
    with ExitStack() as handles:
        backends = {}
        for setting in KV_SETTINGS:
            backends[setting] = backend = _open(path, setting, cfg, sequences)
            handles.callback(backend.close)
        greedy = {setting: _greedy(backend, prompts, cfg) for setting, backend in backends.items()}
        runs: dict[tuple[str, str], list[list[float]]] = {setting: [] for setting in backends}
        last: dict[tuple[str, str], tuple[list[GenerationResult], StepClock]] = {}
        for _ in range(max(cfg.sizes.run_repeats, 1)):
            for setting, backend in backends.items():  # the settings take turns: the same load for each
                clock = StepClock()
                results = _sampled(backend, prompts, cfg, clock)
                runs[setting].append(clock.stop())
                last[setting] = results, clock
        rows = []
        for setting, backend in backends.items():
            results, clock = last[setting]
            rows.append({**_row(backend, results, runs[setting], clock), **greedy_agreement(greedy[REFERENCE], greedy[setting])})
    return {
        "kv": rows,
        "kv_detail": {
            "problems": len(prompts),
            "M": cfg.M,
            "max_tokens": cfg.sizes.kv_tokens,
            "f16_cells_budget": cfg.ctx,
            "reference": {"kv_type": REFERENCE[0], "flash_attn": REFERENCE[1]},
        },
    }
