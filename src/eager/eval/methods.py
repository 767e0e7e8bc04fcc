"""The four evaluation methods, in one table.

* ``parallel``: M independent samples per prompt (the baseline);
* ``eager-init``: one EAGER-init tree per prompt, at most M sequences;
* ``eager-adapt``: the eager-init trees, then the saved budget R = M*|D| - sum n_i
  goes to the prompts whose tree reached M (no labels needed), up to 3M each;
* ``eager``: the eager-init trees, then R goes to the prompts with no correct
  sequence (labels needed), those at the cap first, up to M each.

A method either grows its own trees (``tree_method``: the brancher method that
grows them) or builds on eager-init's trees (``plan``: which prompts get how
many extra sequences). ``phase`` keys a tree's sampling, so each method's
trees are independent of the others'; the table's order is the report's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from eager.eval.budget import ReallocationConfig, adapt_plan, full_plan

Records = Sequence[dict[str, Any]]
# plan(eager-init records in problem order, M, reallocation config) -> {problem index: extra sequences}
Plan = Callable[[Records, int, ReallocationConfig], dict[int, int]]


def _plan_adapt(init: Records, M: int, cfg: ReallocationConfig) -> dict[int, int]:
    counts = [len(r["sequences"]) for r in init]
    return adapt_plan(counts, M, cfg.adapt_extra_factor)


def _plan_full(init: Records, M: int, cfg: ReallocationConfig) -> dict[int, int]:
    counts = [len(r["sequences"]) for r in init]
    solved = [any(s["correct"] for s in r["sequences"]) for r in init]
    return full_plan(counts, solved, M, cfg.full_extra_factor)


@dataclass(frozen=True)
class EvalMethod:
    name: str
    phase: int  # part of every tree's sampling key
    tree_method: str | None = None  # grows its own trees with this brancher method
    plan: Plan | None = None  # or reallocates eager-init's saved budget with this plan
    extra_factor: Callable[[ReallocationConfig], int] | None = None  # its largest extra tree, in M
    needs_labels: bool = False


EVAL_METHODS: dict[str, EvalMethod] = {
    m.name: m
    for m in (
        EvalMethod("parallel", 0, tree_method="parallel"),
        EvalMethod("eager-init", 1, tree_method="eager-init"),
        EvalMethod("eager-adapt", 2, plan=_plan_adapt, extra_factor=lambda c: c.adapt_extra_factor),
        EvalMethod("eager", 3, plan=_plan_full, extra_factor=lambda c: c.full_extra_factor, needs_labels=True),
    )
}

INIT_METHOD = "eager-init"  # the trees the reallocation methods build on
TREE_METHODS = tuple(name for name, m in EVAL_METHODS.items() if m.tree_method)
REALLOCATION_METHODS = tuple(name for name, m in EVAL_METHODS.items() if m.plan)


def method_order(name: str) -> int:
    """A method's place in reports (unknown names last)."""
    names = list(EVAL_METHODS)
    return names.index(name) if name in names else len(names)
