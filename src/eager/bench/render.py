"""The bench's results as a markdown table and a two-panel plot (text and
pictures at the edge: these read the dict :func:`eager.bench.run.run_bench` returns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _headline_rows(out: dict[str, Any]) -> list[str]:
    """One table row per headline number: its value and what it measured."""
    e, ent, eag, fork = out["engine_vs_raw_detail"], out["entropy_detail"], out["eager_detail"], out["fork_detail"]
    return [
        "| key | value | meaning |",
        "| --- | --- | --- |",
        f"| engine_tokens_per_s | {_fmt(out['engine_tokens_per_s'])} | our engine, parallel M={out['M']}, one prompt, {e['tokens']} tokens in {e['steps']} steps |",
        f"| raw_tokens_per_s | {_fmt(out['raw_tokens_per_s'])} | raw llama-cpp-python loop, the same batches, greedy |",
        f"| engine_vs_raw | {_fmt(out['engine_vs_raw'])} | ours / raw tokens per second (target >= 0.95); the engine takes {_fmt(e['engine_overhead_ms_per_step'])} ms more per step |",
        f"| entropy_overhead | {_fmt(out['entropy_overhead'])} | top-20 entropy + sampling of {ent['batch']} rows / decode step ({_fmt(ent['decode_step_ms'])} ms) (target < 0.03) |",
        f"| entropy_overhead_topk | {_fmt(out['entropy_overhead_topk'])} | entropy {_fmt(ent['entropy_topk_ms'])} ms + sampling {_fmt(ent['sampling_ms'])} ms |",
        f"| entropy_overhead_full | {_fmt(out['entropy_overhead_full'])} | full-vocabulary entropy {_fmt(ent['entropy_full_ms'])} ms + sampling |",
        f"| token_ratio | {_fmt(out['token_ratio'])} | generated tokens, EAGER-init / parallel, {eag['problems']} GSM8K questions, {eag['max_tokens']} tokens max, theta {eag['theta']}{' (' + eag['theta_source'] + ')' if eag.get('theta_source') else ''} |",
        f"| wall_ratio | {_fmt(out['wall_ratio'])} | wall-clock, EAGER-init / parallel (target <= 1.0 x token_ratio: {_fmt(eag['wall_over_token_ratio'])} x) |",
        f"| fork_ms | {_fmt(out['fork_ms'])} | one llama_memory_seq_cp of a {fork['prefix_tokens']}-token prefix |",
        f"| step_ms | {_fmt(out['step_ms'])} | one decode step of {fork['sequences']} sequences after that prefix |",
        f"| prefill_ms | {_fmt(out['prefill_ms'])} | prefilling the {fork['prefix_tokens']}-token prefix again (what a fork saves) |",
        f"| kv_cells | {out['kv_cells']} | cells in use: prefix once + {fork['sequences']} x {fork['new_tokens_each']} own tokens ({_fmt(out['kv_cells'] * fork['kv_bytes_per_cell'] / 2**20)} MiB) |",
        f"| sum_seq_len | {out['sum_seq_len']} | sum of sequence lengths (what separate caches would hold) |",
        f"| vs_transformers | {_fmt(out['vs_transformers'])} | ours / transformers tokens per second: {out['transformers_message']} |",
    ]


def _fill_line(fill: dict[str, Any]) -> str:
    return (
        f"KV fill check: a {fill['n_ctx']}-cell context, a {fill['prefix_tokens']}-token prefix forked {fill['sequences']} ways, "
        f"took {fill['steps_until_full']} decode steps of {fill['sequences']} tokens before llama_decode reported it full "
        f"(needed {fill['new_tokens_required']}: {_fmt(fill['fits_required'])}); cells when full = {fill['cells_when_full']}; "
        f"copying the prefix would need {fill['cells_if_prefix_copied']} cells."
    )


def _eager_rows(eager: dict[str, Any]) -> list[str]:
    """EAGER-init beside parallel: work done, and how many prompts shared the steps."""
    lines = [
        "| method | tokens | sequences | steps | wall s | prompts in flight (max / mean) | preemptions |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, key in (("parallel", "parallel"), ("eager-init", "eager_init")):
        r = eager[key]
        lines.append(
            f"| {name} | {r['tokens']} | {r['sequences']} | {r['steps']} | {_fmt(r['wall_s'])} "
            f"| {r['prompts_in_flight_max']} / {_fmt(r['prompts_in_flight_mean'])} | {r['preemptions']} |"
        )
    return lines


def _scaling_rows(scaling: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| prompts given | sequences | tokens/s | KV cells | KV MiB | prompts in flight (max / mean) | preemptions |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['prompts']} | {r['sequences']} | {_fmt(r['tokens_per_s'])} | {r['kv_cells']} | {_fmt(r['kv_mib'])} "
        f"| {r['prompts_in_flight_max']} / {_fmt(r['prompts_in_flight_mean'])} | {r['preemptions']} |"
        for r in scaling
    ]
    return lines


def _kv_rows(rows: list[dict[str, Any]], detail: dict[str, Any]) -> list[str]:
    """One row per cache type and flash attention setting, all in the same KV memory."""
    ref = detail["reference"]
    lines = [
        f"KV cache settings, each in the memory of {detail['f16_cells_budget']} f16 cells: {detail['problems']} GSM8K questions, "
        f"parallel M = {detail['M']}, {detail['max_tokens']} tokens; greedy agreement and entropy gap against "
        f"{ref['kv_type']} with flash attention {ref['flash_attn']}.",
        "",
        "| kv_type | flash_attn | cells | bytes/cell | KV MiB | prompts in flight (max / mean) | preemptions | tokens/s | greedy agreement | top-20 entropy gap (nats) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['kv_type']} | {r['flash_attn']} | {r['ctx']} | {r['kv_bytes_per_cell']} | {_fmt(r['kv_mib'])} "
        f"| {r['prompts_in_flight_max']} / {_fmt(r['prompts_in_flight_mean'])} | {r['preemptions']} | {_fmt(r['tokens_per_s'])} "
        f"| {_fmt(r['greedy_agreement'])} | {_fmt(r['entropy_mad'])} |"
        for r in rows
    ]
    return lines


def _spread_list(out: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """(what, its min / median / max) for every repeated timing of the run."""
    e, ent, fork, eag = out["engine_vs_raw_detail"], out["entropy_detail"], out["fork_detail"], out["eager_detail"]
    ms, fork_ms = ent.get("ms_over_repeats", {}), fork.get("ms_over_repeats", {})
    items = [
        ("engine tokens/s, parallel one prompt (runs)", e.get("engine_tokens_per_s_runs")),
        ("raw loop tokens/s (runs)", e.get("raw_tokens_per_s_runs")),
        (f"decode step of {ent['batch']} rows, ms", ms.get("decode_step")),
        ("top-20 entropy, ms", ms.get("entropy_topk")),
        ("full entropy, ms", ms.get("entropy_full")),
        ("sampling, ms", ms.get("sampling")),
        ("fork, ms", fork_ms.get("fork")),
        (f"decode step of {fork['sequences']} sequences after the prefix, ms", fork_ms.get("step")),
        ("parallel on GSM8K, wall s", eag["parallel"].get("wall_s_runs")),
        ("EAGER-init on GSM8K, wall s", eag["eager_init"].get("wall_s_runs")),
    ]
    items += [(f"scaling, {r['prompts']} prompts, s", r.get("seconds_runs")) for r in out["scaling"]]
    items += [(f"KV {r['kv_type']}, flash attention {r['flash_attn']}, s", r.get("seconds_runs")) for r in out.get("kv") or []]
    return [(name, s) for name, s in items if s]


def _spread_rows(out: dict[str, Any]) -> list[str]:
    rows = _spread_list(out)
    if not rows:
        return []
    lines = ["Every timing over its repeats (headline numbers use the fastest):", "", "| timing | min | median | max | repeats |", "| --- | --- | --- | --- | --- |"]
    return lines + [f"| {name} | {_fmt(s['min'])} | {_fmt(s['median'])} | {_fmt(s['max'])} | {s['n']} |" for name, s in rows]


def to_markdown(out: dict[str, Any], command: str = "") -> str:
    """The run as markdown: settings, the headline table, the fill check, EAGER vs parallel, scaling, KV settings and targets."""
    peer = out.get("transformers_detail")
    lines = [
        f"# eager bench: {out['model']} ({'quick' if out['quick'] else 'full'})",
        "",
        f"M = {out['M']}, {out['threads']} thread{'s' if out['threads'] != 1 else ''}, n_ctx {out['n_ctx']}, n_batch {out['n_batch']}, vocabulary {out['vocab']}.",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += ["", *_headline_rows(out), "", _fill_line(out["kv_fill"])]
    if peer:
        lines.append(f"transformers: {_fmt(peer['tokens_per_s'])} tokens/s ({peer['tokens']} tokens, {peer['new_tokens_each']} new each, {_fmt(peer['seconds'])} s).")
    lines += ["", *_eager_rows(out["eager_detail"]), "", *_scaling_rows(out["scaling"])]
    if out.get("kv"):
        lines += ["", *_kv_rows(out["kv"], out["kv_detail"])]
    spreads = _spread_rows(out)
    lines += ["", *spreads] if spreads else []
    lines += ["", "| target | value | goal | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {_fmt(t['value'])} | {t['target']} | {_fmt(t['met'])} |" for name, t in out["targets"].items()]
    return "\n".join(lines) + "\n"


def _plot_eager_vs_parallel(ax, eager: dict[str, Any]) -> None:
    """EAGER-init against parallel: generated tokens and wall-clock, each relative to parallel's
    (wall-clock with its min-max over repeats), the absolute numbers on the bars."""
    import numpy as np

    par, ini = eager["parallel"], eager["eager_init"]
    xs = np.arange(2)
    for offset, (name, run, color) in zip((-0.2, 0.2), (("parallel", par, "#888888"), ("EAGER-init", ini, "#1f77b4"))):
        values = [run["tokens"] / par["tokens"], run["wall_s"] / par["wall_s"]]
        spread = run.get("wall_s_runs")
        err = None
        if spread:
            low, high = spread["min"] / par["wall_s"], spread["max"] / par["wall_s"]
            err = [[0, max(0.0, values[1] - low)], [0, max(0.0, high - values[1])]]
        bars = ax.bar(xs + offset, values, 0.4, yerr=err, capsize=4, color=color, label=name)
        ax.bar_label(bars, labels=[f"{run['tokens']} tok", f"{run['wall_s']:.2f} s"], fontsize=8)
    ax.set_xticks(xs, ["generated tokens", "wall-clock"])
    ax.set_ylabel("relative to parallel")
    ax.set_ylim(0, max(1.25, ax.get_ylim()[1]))
    ax.legend(loc="lower right", fontsize=8)
    theta = f"theta {eager['theta']:g}" + (f" ({eager['theta_source']})" if eager.get("theta_source") else "")
    ax.set_title(f"EAGER-init vs parallel, {eager['problems']} GSM8K questions, {theta}", fontsize=9)


def plot(out: dict[str, Any], path: str | Path) -> None:
    """Three panels: tokens/s of engine, raw loop and peer; EAGER-init vs parallel; scaling with prompts in flight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.2))
    names = ["raw llama.cpp loop", "eager engine"]
    rates = [out["raw_tokens_per_s"], out["engine_tokens_per_s"]]
    if out.get("transformers_detail"):
        names.append("transformers")
        rates.append(out["transformers_detail"]["tokens_per_s"])
    bars = left.bar(names, rates, color=["#888888", "#1f77b4", "#ff7f0e"][: len(rates)])
    left.bar_label(bars, fmt="%.0f")
    left.set_ylabel("tokens / s (generated, prefill included)")
    left.set_title(f"parallel M={out['M']}, one prompt (engine/raw = {out['engine_vs_raw']:.2f})")
    scaling = out["scaling"]
    xs = [r["prompts"] for r in scaling]
    right.plot(xs, [r["tokens_per_s"] for r in scaling], "o-", color="#1f77b4", label="tokens/s")
    right.set_ylim(bottom=0)
    right.set_xscale("log", base=2)
    right.set_xticks(xs, [str(x) for x in xs])
    right.set_xlabel(f"prompts in flight (x {out['M']} sequences)")
    right.set_ylabel("tokens / s", color="#1f77b4")
    twin = right.twinx()
    twin.plot(xs, [r["kv_mib"] for r in scaling], "s--", color="#2ca02c", label="KV MiB")
    twin.set_ylim(bottom=0)
    twin.set_ylabel("KV cache in use (MiB)", color="#2ca02c")
    right.set_title("scaling")
    _plot_eager_vs_parallel(middle, out["eager_detail"])
    fig.suptitle(f"eager bench: {out['model']}, {out['threads']} thread{'s' if out['threads'] != 1 else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
