"""What ``eager generate`` prints: the tree view with each branch's answer and the vote,
or JSON / JSON Lines in one shape (``generate.schema.json``, shipped beside this file).

``--json``: one object, ``{"settings": {...}, "results": [...]}``, however many prompts.
``--jsonl``: one line per prompt, each self-contained: ``{"settings": {...}, "result": {...}}``
(the same settings on every line, so a line can be read, split or grepped alone).
A result is ``GenerationResult.to_dict()`` plus the prompt's ``index``; each sequence
carries its ``index`` (its position in the tree: ``parent`` refers to it).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Sequence

SCHEMA_FILE = "generate.schema.json"
HEAD_CHARS = 160  # a long text shows its start and its end (where the answer is)
TAIL_CHARS = 240


def schema() -> dict[str, Any]:
    """The JSON Schema of ``--json`` and of each ``--jsonl`` line."""
    return json.loads(resources.files("eager.cli").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"eager": of("eager"), "llama-cpp-python": of("llama-cpp-python")}


def settings(*, model: str, method: str, theta, branching, sampling, engine, chat: bool) -> dict[str, Any]:
    """What produced the results: enough to reproduce them (``theta`` is a ThetaChoice; None for parallel)."""
    from eager.eval.config import model_sha256
    from eager.remote import redact

    return {
        "model": redact(model),  # an openai: URL's credentials are not printed
        "model_sha256": model_sha256(model),
        "method": method,
        "theta": theta.value if theta is not None else None,
        "theta_source": theta.source if theta is not None else None,
        "M": branching.max_sequences,
        "W": branching.window,
        "dynamic_theta": branching.dynamic_theta,
        "entropy": branching.entropy if branching.entropy != "topk" else f"topk{branching.entropy_top_k}",
        "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k},
        "seed": sampling.seed,
        "max_tokens": sampling.max_tokens,
        "chat": chat,
        "ctx": engine.ctx,
        "versions": _versions(),
    }


def result_entry(index: int, result) -> dict[str, Any]:
    """One prompt's result: ``to_dict()`` with the prompt's index and each sequence's."""
    entry = result.to_dict()
    entry["sequences"] = [{"index": seq.index, **row} for seq, row in zip(result.sequences, entry["sequences"])]
    return {"index": index, **entry}


def as_json(run_settings: dict[str, Any], results: Sequence) -> str:
    return json.dumps({"settings": run_settings, "results": [result_entry(i, r) for i, r in enumerate(results)]}, ensure_ascii=False)


def as_jsonl(run_settings: dict[str, Any], results: Sequence) -> str:
    return "\n".join(json.dumps({"settings": run_settings, "result": result_entry(i, r)}, ensure_ascii=False) for i, r in enumerate(results))


# -- the tree view -----------------------------------------------------------------------


def shown_text(text: str, full: bool = False) -> str:
    """A branch's text on one line; a long one keeps its start and its end, where the answer is."""
    flat = " ".join(text.split())
    if full or len(flat) <= HEAD_CHARS + TAIL_CHARS + 5:
        return flat
    return f"{flat[:HEAD_CHARS]} [...] {flat[-TAIL_CHARS:]}"


def _depth(result, seq) -> int:
    depth, parent = 0, seq.parent
    while parent is not None:
        depth += 1
        parent = result.sequences[parent].parent
    return depth


def answers_of(result, mode: str) -> list[str | None]:
    """Each sequence's extracted answer (``eager.eval.grading.extract``), None where it has none."""
    from eager.eval.grading import extract

    return [extract(seq.text, mode).answer for seq in result.sequences]


def _equivalence(answers: Sequence[str | None]):
    """Math-Verify's equivalence, as eval's Cons@k votes, when answers differ in writing (else no need to load it)."""
    from eager.eval.metrics import normalize_vote

    if len({normalize_vote(a) for a in answers if a is not None}) < 2:
        return None
    from eager.eval.grading import AnswerEquivalence

    return AnswerEquivalence()


def vote_line(answers: Sequence[str | None], equivalent=None) -> str:
    """``vote: 391 x5, 400 x2, none x1; majority 391 (5 of 8)``: answers grouped as eval's Cons@k groups
    them (same normalised text, or equal by ``equivalent``), each group named by its first answer."""
    from eager.eval.metrics import vote_groups

    groups = sorted(vote_groups(answers, equivalent), key=lambda g: (-len(g), g[0]))
    missing = sum(a is None for a in answers)
    parts = [f"{answers[g[0]]} x{len(g)}" for g in groups] + ([f"none x{missing}"] if missing else [])
    if not groups:
        return f"vote: no answers ({len(answers)} sequences without one)"
    top = groups[0]
    tie = len(groups) > 1 and len(groups[1]) == len(top)
    verdict = f"majority {answers[top[0]]} ({len(top)} of {len(answers)})" + (", tied: the first to appear wins" if tie else "")
    return f"vote: {', '.join(parts)}; {verdict}"


def _branch_lines(result, seq, fork, answer: str | None, full: bool) -> list[str]:
    indent = "  " * _depth(result, seq)
    if seq.parent is None:
        origin, shown = "root", shown_text(seq.text, full)
    else:
        origin = f"forked from #{seq.parent} at token {seq.fork_at} (H={fork.entropy:.2f} > {fork.threshold:.2f})"
        shown = "..." + shown_text(seq.own_text, full)
    said = f"answer {answer}" if answer is not None else "no answer"
    return [f"{indent}#{seq.index} {origin}: {len(seq.token_ids)} tokens, {seq.finish_reason}; {said}", f"{indent}   {shown}"]


def render_tree(result, *, full: bool = False, extract: str = "boxed") -> str:
    """The human view: each branch, where it forked and the entropy there, its answer; then the vote."""
    forks = {f.child: f for f in result.forks}
    answers = answers_of(result, extract)
    lines = [f"prompt ({result.prompt_tokens} tokens, {result.method}): {shown_text(result.prompt, full) if full else _short(result.prompt)}"]
    for seq, answer in zip(result.sequences, answers):
        lines += _branch_lines(result, seq, forks.get(seq.index), answer, full)
    saved = 1 - result.generated_tokens / result.sequence_tokens if result.sequence_tokens else 0.0
    rate = result.generated_tokens / result.wall_s if result.wall_s > 0 else 0.0
    lines.append(
        f"{len(result.sequences)} sequences, {len(result.forks)} forks; generated {result.generated_tokens} tokens "
        f"for {result.sequence_tokens} sequence tokens ({saved:.0%} shared); {result.wall_s:.1f} s, {rate:.1f} tok/s"
    )
    lines.append(vote_line(answers, _equivalence(answers)))
    return "\n".join(lines)


def _short(text: str, width: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."
