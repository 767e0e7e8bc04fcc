"""The terminal view: a rich Tree of branches, each fork's entropy against theta_eff, tokens coloured by entropy.

:func:`render_terminal` returns the text (with ANSI colours unless ``color`` is
False or ``NO_COLOR`` is set); the CLI prints it. Library code does not print.
"""

from __future__ import annotations

import io
import os
from typing import Any

from rich.console import Console, Group
from rich.text import Text
from rich.tree import Tree

from eager.view import shape

# colour steps of a token's entropy as a share of theta (shape.heat): sure ... at the threshold
HEAT_STYLES = ("", "green", "yellow", "dark_orange", "bold red")
SHOWN_CHARS = 600  # a branch's own text beyond this is cut in the middle unless full=True


def render_terminal(trees: dict[str, Any] | list[dict[str, Any]], *, width: int | None = None, color: bool | None = None, full: bool = False) -> str:
    """One or more view trees as terminal text; ``color`` None follows ``NO_COLOR`` and the terminal."""
    trees = [trees] if isinstance(trees, dict) else list(trees)
    if color is None:
        color = not os.environ.get("NO_COLOR")
    out = io.StringIO()
    console = Console(file=out, width=width or 100, color_system="truecolor" if color else None, force_terminal=color, no_color=not color, highlight=False, emoji=False)
    for tree in trees:
        console.print(tree_renderable(tree, full=full))
        console.print(summary_line(tree))
    return out.getvalue()


def tree_renderable(tree: dict[str, Any], *, full: bool = False) -> Tree:
    """The rich Tree of one view tree: the prompt at the root, each branch under its parent."""
    title = Text(tree.get("title") or "", style="bold")
    root = Tree(Text.assemble(title, " " if tree.get("title") else "", f"({tree.get('method', '')}) ", _one_line(tree.get("prompt") or "", 160)))
    if tree.get("gold") is not None:
        root.label.append(f"  gold: {tree['gold']}", style="cyan")
    kids = shape.children(tree)
    forks = shape.forks_by_child(tree)
    theta = shape.theta_of(tree)

    def add(node: Tree, index: int) -> None:
        seq = shape.sequences(tree)[index]
        branch = node.add(Group(_head(seq, index, forks.get(index)), _body(tree, seq, theta, full)))
        for child in kids.get(index, []):
            add(branch, child)

    for index in kids.get(None, []):
        add(root, index)
    return root


def summary_line(tree: dict[str, Any]) -> Text:
    a = shape.accounting(tree)
    line = f"{a['sequences']} sequences, {a['forks']} forks"
    if a["generated"] is not None:
        line += f"; generated {a['generated']} tokens for {a['sequence_tokens']} sequence tokens"
    if a["saved"] is not None:
        line += f" ({a['saved']:.0%} saved by sharing)"
    return Text(line, style="dim")


def _head(seq: dict[str, Any], index: int, fork: dict[str, Any] | None) -> Text:
    head = Text()
    head.append(f"#{index} ", style="bold")
    if seq.get("parent") is None:
        head.append("root" + (f" (round {seq['round']})" if seq.get("round") else ""))
    else:
        head.append(f"forked from #{seq['parent']} at token {seq.get('fork_at')}")
        if fork and fork.get("entropy") is not None:
            head.append(f" H={fork['entropy']:.2f} > θ_eff {fork['threshold']:.2f}", style="magenta")
        if fork and fork.get("child_text") is not None:
            head.append(f" ({_alternative(fork, 'parent')} | {_alternative(fork, 'child')})", style="dim")
    head.append(f": {shape.n_tokens(seq)} tokens, {seq.get('finish_reason') or 'running'}")
    if "answer" in seq:
        head.append(f", answer {seq['answer'] if seq['answer'] is not None else '-'}")
    verdict = shape.verdict(seq)
    if verdict:
        head.append(f" {'✓' if verdict == 'correct' else '✗'} {verdict}", style="bold green" if verdict == "correct" else "bold red")
    return head


def _alternative(fork: dict[str, Any], side: str) -> str:
    text = fork.get(f"{side}_text")
    prob = fork.get(f"{side}_prob")
    shown = repr(text) if text is not None else "?"
    return f"{'top-1' if side == 'parent' else 'top-2'} {shown}" + (f" {prob:.2f}" if prob is not None else "")


def _body(tree: dict[str, Any], seq: dict[str, Any], theta: float, full: bool) -> Text:
    tokens = shape.own_tokens(seq)
    if not tokens:
        return Text(_cut(" ".join(shape.own_text(tree, seq).split()), full), style="")
    body = Text()
    for piece, entropy in tokens:
        body.append(piece, style=HEAT_STYLES[shape.heat(entropy, theta)])
    if not full and len(body) > SHOWN_CHARS:
        half = SHOWN_CHARS // 2
        body = Text.assemble(body[:half], Text(" ... ", style="dim"), body[len(body) - half :])
    return body


def _cut(text: str, full: bool) -> str:
    if full or len(text) <= SHOWN_CHARS:
        return text
    half = SHOWN_CHARS // 2
    return text[:half] + " ... " + text[-half:]


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."
