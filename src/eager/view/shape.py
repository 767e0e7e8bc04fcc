"""What a viewer reads off a view tree: children, a branch's own text and tokens, the accounting.

A view tree is ``GenerationResult.to_dict()``'s shape (``eager.view.load``); it may
be partial (the playground draws trees as they grow): a sequence with
``finish_reason`` None is still running, and ``pieces`` or ``entropies`` may be
shorter than its tokens or missing.
"""

from __future__ import annotations

import os
from typing import Any

DEFAULT_THETA = 2.2  # the paper's: the colour scale's reference when a tree does not say its theta


def sequences(tree: dict[str, Any]) -> list[dict[str, Any]]:
    return tree.get("sequences") or []


def children(tree: dict[str, Any]) -> dict[int | None, list[int]]:
    """Each branch's children by index (None: the roots), in order."""
    out: dict[int | None, list[int]] = {}
    for i, seq in enumerate(sequences(tree)):
        out.setdefault(seq.get("parent"), []).append(i)
    return out


def forks_by_child(tree: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {f["child"]: f for f in tree.get("forks") or [] if "child" in f}


def n_tokens(seq: dict[str, Any]) -> int:
    if "token_ids" in seq:
        return len(seq["token_ids"])
    return int(seq.get("n_tokens") or 0)


def own_tokens(seq: dict[str, Any]) -> list[tuple[str, float | None]]:
    """(text, entropy) of each token the branch generated itself; [] where the pieces are unknown."""
    pieces = seq.get("pieces") or []
    entropies = seq.get("entropies") or []
    return [(p, entropies[i] if i < len(entropies) else None) for i, p in enumerate(pieces)]


def own_text(tree: dict[str, Any], seq: dict[str, Any]) -> str:
    """The text the branch generated itself: its pieces, else its text past the parent's common prefix."""
    if seq.get("pieces"):
        return "".join(seq["pieces"])
    text = seq.get("text") or ""
    parent = seq.get("parent")
    if parent is None:
        return text
    prefix = os.path.commonprefix([text, sequences(tree)[parent].get("text") or ""])
    return text[len(prefix) :]


def theta_of(tree: dict[str, Any]) -> float:
    theta = tree.get("theta")
    return float(theta) if isinstance(theta, (int, float)) else DEFAULT_THETA


def accounting(tree: dict[str, Any]) -> dict[str, Any]:
    """Generated vs sequence tokens and the share saved (None where unknown)."""
    generated = tree.get("generated_tokens")
    total = tree.get("sequence_tokens")
    if total is None:
        total = sum(n_tokens(s) for s in sequences(tree))
    saved = 1 - generated / total if isinstance(generated, int) and total else None
    return {"sequences": len(sequences(tree)), "forks": len(tree.get("forks") or []), "generated": generated, "sequence_tokens": total, "saved": saved}


def heat(entropy: float | None, theta: float) -> int:
    """A token's colour step, 0 (sure) to 4 (at or above theta): the share of theta, in fifths."""
    if entropy is None or theta <= 0:
        return 0
    return min(4, int(5 * entropy / theta))


def verdict(seq: dict[str, Any]) -> str | None:
    if "correct" not in seq:
        return None
    return "correct" if seq["correct"] else "incorrect"
