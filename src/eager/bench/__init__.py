"""Speed you can measure: ``eager bench``.

Seven measurements in one run, on one model file, each a small function that
returns plain numbers. The files read in the order of a run:

* :mod:`~eager.bench.config`: what to measure and how much (:class:`BenchConfig`, :class:`BenchSizes`);
* :mod:`~eager.bench.clock`: fastest-of-repeats and per-step timing;
* :mod:`~eager.bench.raw`: the baseline, a raw llama-cpp-python batched decode loop;
* :mod:`~eager.bench.measure`: (a) engine vs raw, (b) entropy + sampling cost,
  (c) EAGER-init vs parallel on GSM8K, (f) scaling with prompts in flight;
* :mod:`~eager.bench.cache`: (d) fork cost and KV cells, with a fill check;
* :mod:`~eager.bench.peer`: (e) Hugging Face transformers on the same GGUF (optional);
* :mod:`~eager.bench.kv`: (g) the KV cache's type (f16, q8_0) and flash attention (on, off);
* :mod:`~eager.bench.run`: :func:`run_bench`, every section into one JSON-ready dict;
* :mod:`~eager.bench.render`: that dict as markdown and as a plot.

Library code: nothing here prints; ``eager bench`` (:mod:`eager.cli.bench`) does.
"""

from eager.bench.cache import measure_cache_fill, measure_fork_cost
from eager.bench.clock import StepClock, clocked_runs, fastest_seconds, steady_seconds
from eager.bench.config import FULL, QUICK, BenchConfig, BenchSizes
from eager.bench.kv import KV_SETTINGS, greedy_agreement, measure_kv_options
from eager.bench.measure import measure_eager_vs_parallel, measure_engine_vs_raw, measure_entropy_overhead, measure_scaling
from eager.bench.peer import TRANSFORMERS_MISSING, measure_transformers
from eager.bench.raw import RawLoop, decode_schedule, sampled_tokens
from eager.bench.render import plot, to_markdown
from eager.bench.run import HEADLINE_KEYS, TARGETS, run_bench, targets_of

__all__ = [
    "FULL",
    "HEADLINE_KEYS",
    "KV_SETTINGS",
    "QUICK",
    "TARGETS",
    "TRANSFORMERS_MISSING",
    "BenchConfig",
    "BenchSizes",
    "RawLoop",
    "StepClock",
    "clocked_runs",
    "decode_schedule",
    "fastest_seconds",
    "greedy_agreement",
    "measure_cache_fill",
    "measure_eager_vs_parallel",
    "measure_engine_vs_raw",
    "measure_entropy_overhead",
    "measure_fork_cost",
    "measure_kv_options",
    "measure_scaling",
    "measure_transformers",
    "plot",
    "run_bench",
    "sampled_tokens",
    "steady_seconds",
    "targets_of",
    "to_markdown",
]
