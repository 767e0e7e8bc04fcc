"""tradeoff.png: accuracy against cost, every method visible.

Pass@k with its 95% bootstrap interval (error bars) against generated tokens, one
curve per method through its M values. Each method has its own marker and is drawn a
few points to the side of the others (a drawing offset: the data are not moved), so
methods with equal results, as eager-adapt and eager-init when nothing was
reallocated, stay visible side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eager.eval.methods import method_order
from eager.eval.metrics import LEVEL


def _token_label(x: float, _position=None) -> str:
    """300, 1.5k, 2M: readable token counts on the x axis."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


# (colour, marker) per method: every method its own marker, so coinciding points stay told apart
PLOT_STYLE = {
    "parallel": ("tab:gray", "s"),
    "eager-init": ("tab:blue", "o"),
    "eager-adapt": ("tab:orange", "^"),
    "eager": ("tab:green", "D"),
}
OFFSET_POINTS = 5.0  # methods are drawn this many points apart along x, so equal results do not hide each other


def plot_tradeoff(summary: dict[str, Any], path: Path, pass_label: str = "Pass@k") -> None:
    """Pass@k with its bootstrap interval against generated tokens; one curve per method through its M values.

    ``summary`` is ``eager.eval.report.build_summary``'s; ``pass_label`` names the y axis
    with its k (e.g. "Pass@8")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, list[dict[str, Any]]] = {}
    for row in summary["methods"].values():
        if row["n_prompts"]:
            curves.setdefault(row["method"], []).append(row)
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=150)
    order = sorted(curves, key=method_order)
    for position, method in enumerate(order):
        shift = (position - (len(order) - 1) / 2) * OFFSET_POINTS
        _plot_method(ax, fig, method, sorted(curves[method], key=lambda r: r["M"]), shift, label_M=len(summary["M"]) > 1)
    xs = [row["generated_tokens"] for rows in curves.values() for row in rows]
    _style_axes(ax, xs, summary, label=pass_label)
    if curves:
        ax.legend(title="method", loc="best", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_method(ax, fig, method: str, rows: list[dict[str, Any]], shift: float, label_M: bool) -> None:
    """One method's curve with interval bars, drawn ``shift`` points to the side (the data are not moved);
    with ``label_M`` each point is labelled with its M."""
    from matplotlib.transforms import ScaledTranslation

    color, marker = PLOT_STYLE.get(method, ("tab:purple", "v"))
    x = [r["generated_tokens"] for r in rows]
    y = [r["pass_at_k"] for r in rows]
    bounds = [r["intervals"]["pass_at_k"] or [r["pass_at_k"]] * 2 for r in rows]
    below = [max(0.0, yi - b[0]) for yi, b in zip(y, bounds)]
    above = [max(0.0, b[1] - yi) for yi, b in zip(y, bounds)]
    drawn = ax.errorbar(
        x, y, yerr=[below, above], color=color, marker=marker, markersize=7, markeredgecolor="white",
        linewidth=1.8, elinewidth=1.0, capsize=3, label=method, zorder=3,
    )
    aside = ScaledTranslation(shift / 72, 0, fig.dpi_scale_trans)  # points to inches: after autoscaling saw the data
    line, caps, bars = drawn.lines
    for artist in (line, *caps, *bars):
        artist.set_transform(artist.get_transform() + aside)
    for r, xi, yi in zip(rows, x, y) if label_M else ():
        ax.annotate(f"M={r['M']}", (xi, yi), textcoords="offset points", xytext=(5 + shift, 6), fontsize=7, color=color)


def _style_axes(ax, xs: list[float], summary: dict[str, Any], label: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    positive = [x for x in xs if x > 0]
    if positive and max(positive) / min(positive) > 5:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(_token_label))
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel(f"generated tokens (shared prefixes counted once; methods drawn {OFFSET_POINTS:g} pt apart)")
    ax.set_ylabel(f"{label}, {100 * LEVEL:.0f}% bootstrap interval")
    dataset = Path(str(summary["dataset"])).name
    budgets = "" if len(summary["M"]) > 1 else f", M = {summary['M'][0]}" if summary["M"] else ""
    ax.set_title(f"Accuracy vs cost: {summary['model']} on {dataset} ({summary['n_prompts']} prompts{budgets})", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
