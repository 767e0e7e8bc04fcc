"""Budget: where the sequences EAGER-init saved are spent again.

The budget is counted in sequences: B = M * |D| for |D| prompts with a cap of M
sequences each. EAGER-init uses n_i <= M on prompt i, saving R = B - sum_i n_i.
R is split evenly over a set H of "hard" prompts:

    extra_i = floor(R / |H|), plus 1 for the first (R mod |H|) prompts of H,

so if R < |H| the first R hard prompts get one sequence each. Each extra_i is then
capped. Nothing is redistributed after capping: shares differ by at most one, so
when the cap binds it binds (to within one) for every hard prompt.

- EAGER-adapt (no labels): H = prompts that reached the cap, cap = 3M.
- Full EAGER (labels): H = prompts with no correct sequence, those at the cap
  first, cap = M.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eager.core.config import option
from eager.errors import EagerError


@dataclass(frozen=True)
class ReallocationConfig:
    """How eager-adapt and full EAGER spend the budget EAGER-init saved.

    Attributes:
        adapt_extra_factor: eager-adapt gives a hard prompt at most this x M extra.
        full_extra_factor: full EAGER gives a hard prompt at most this x M extra.
        retry_decay, retry_late_decay: the threshold schedule of extra trees
            (:func:`retry_theta`).
    """

    adapt_extra_factor: int = option(3, "eager-adapt: at most this x M extra sequences per hard prompt (default: {default})")
    full_extra_factor: int = option(1, "eager: at most this x M extra sequences per hard prompt (default: {default})")
    retry_decay: float = option(0.8, "theta multiplier per retry tree of a prompt below the cap (default: {default})")
    retry_late_decay: float = option(0.9, "extra theta multiplier per retry from the third tree on (default: {default})")

    def __post_init__(self) -> None:
        for name in ("adapt_extra_factor", "full_extra_factor"):
            if getattr(self, name) < 0:
                raise EagerError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("retry_decay", "retry_late_decay"):
            if not 0 < getattr(self, name) <= 1:
                raise EagerError(f"{name} must be in (0, 1], got {getattr(self, name)}")


def split_budget(saved: int, hard: Sequence[int], cap: int) -> dict[int, int]:
    """Split ``saved`` extra sequences evenly over the prompt indices in ``hard``.

    Returns {prompt index: extra sequences} for the prompts that get at least one,
    in the order of ``hard``. ``saved <= 0`` or no hard prompts gives {}.
    """
    if cap < 0:
        raise ValueError(f"cap must be >= 0, got {cap}")
    if len(set(hard)) != len(hard):
        raise ValueError(f"hard prompt indices must be distinct, got {list(hard)}")
    if saved <= 0 or not hard:
        return {}
    share, remainder = divmod(saved, len(hard))
    plan = {}
    for position, index in enumerate(hard):
        extra = min(share + (1 if position < remainder else 0), cap)
        if extra > 0:
            plan[index] = extra
    return plan


def _check_counts(n_sequences: Sequence[int], max_sequences: int, extra_factor: int) -> None:
    if max_sequences < 1:
        raise ValueError(f"M must be >= 1, got {max_sequences}")
    if extra_factor < 0:
        raise ValueError(f"extra_factor must be >= 0, got {extra_factor}")
    if any(n < 0 for n in n_sequences):
        raise ValueError(f"sequence counts must be >= 0, got {list(n_sequences)}")


def saved_budget(n_sequences: Sequence[int], max_sequences: int) -> int:
    """R = M * |D| - sum_i n_i: sequences the first pass did not use."""
    return max_sequences * len(n_sequences) - sum(n_sequences)


def adapt_plan(n_sequences: Sequence[int], M: int, extra_factor: int = ReallocationConfig.adapt_extra_factor) -> dict[int, int]:
    """EAGER-adapt reallocation: hard = prompts with n_i >= M, each capped at extra_factor * M."""
    _check_counts(n_sequences, M, extra_factor)
    hard = [index for index, n in enumerate(n_sequences) if n >= M]
    return split_budget(saved_budget(n_sequences, M), hard, extra_factor * M)


def full_plan(
    n_sequences: Sequence[int], solved: Sequence[bool], M: int, extra_factor: int = ReallocationConfig.full_extra_factor
) -> dict[int, int]:
    """Full-EAGER reallocation: hard = unsolved prompts, those at the cap (n_i >= M)
    first, otherwise in prompt order; each capped at extra_factor * M."""
    _check_counts(n_sequences, M, extra_factor)
    if len(solved) != len(n_sequences):
        raise ValueError(f"solved has {len(solved)} entries for {len(n_sequences)} prompts")
    unsolved = [index for index, done in enumerate(solved) if not done]
    hard = sorted(unsolved, key=lambda index: n_sequences[index] < M)  # stable: at-cap first
    return split_budget(saved_budget(n_sequences, M), hard, extra_factor * M)


def retry_theta(
    theta: float,
    attempt: int,
    *,
    at_cap: bool,
    decay: float = ReallocationConfig.retry_decay,
    late_decay: float = ReallocationConfig.retry_late_decay,
) -> float:
    """Entropy threshold for the ``attempt``-th extra tree of a prompt (0 = the first, "try 1").

    As the authors' reference code does it:

    * a prompt whose EAGER-init tree ended below the cap lowers theta on every
      try, cumulatively: by ``decay`` (0.8) each try, and from the third try on
      by ``late_decay`` (0.9) as well:

          theta_a = theta * decay**(a + 1) * late_decay**max(0, a - 1)

      e.g. 0.8, 0.64, 0.4608, 0.3318, ... times theta;
    * a prompt at the cap keeps theta on tries 1 and 2 and uses
      ``late_decay`` x theta from the third try on (not compounding).
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if theta < 0:
        raise ValueError(f"theta must be >= 0, got {theta}")
    if not (0 < decay <= 1 and 0 < late_decay <= 1):
        raise ValueError(f"decay factors must be in (0, 1], got {decay}, {late_decay}")
    if at_cap:
        return theta * (late_decay if attempt >= 2 else 1.0)
    return theta * decay ** (attempt + 1) * late_decay ** max(0, attempt - 1)
