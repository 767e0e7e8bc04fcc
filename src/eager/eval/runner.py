"""The evaluation runner behind ``eager eval``: methods x budgets over a dataset.

Data flow: problems (datasets) -> prompts -> engine trees -> graded sequences
(grading, or a caller's verifier) -> one JSON line per finished prompt ->
reallocation of the saved budget (budget) -> report (metrics).

Methods, all on the same prompts and one model:

* ``parallel``: M independent samples per prompt;
* ``eager-init``: one EAGER-init tree per prompt, at most M sequences;
* ``eager-adapt``: the eager-init trees, then the saved budget R = M*|D| - sum n_i
  goes to the prompts whose tree reached M (no labels needed), up to 3M each;
* ``eager``: the eager-init trees, then R goes to the prompts with no correct
  sequence (labels needed), those at the cap first, up to M each.

Extra sequences come from new EAGER-init trees started at the root with
``max_sequences`` = the prompt's remaining extra budget; a round sends one such
tree per unfinished hard prompt to the engine (all of them batched together),
and rounds repeat until every hard prompt has its extra sequences. Every tree
makes at least one sequence, so this ends. A tree's sampling is keyed by
(crc32(problem id), M, phase, attempt): a prompt's trees do not depend on which
other prompts share the run, and eager-adapt and eager reuse the very trees of
eager-init.

Where the trees grow is an executor (:mod:`eager.eval.executors`); either
way this process grades every result and writes every file, so a run's
records do not depend on where its trees grew.

Everything is resumable: each finished prompt is one fsynced line in
``<method>.jsonl``; each finished extra tree is one line in the journal
``.extra-<method>.jsonl``. A restart with the same configuration skips what is
written and regenerates only what is not.
"""


from __future__ import annotations

import zlib
from collections import deque
from contextlib import ExitStack, closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from eager.backends.base import Backend
from eager.core.results import GenerationResult
from eager.core.tree import TreeRequest
from eager.core.results import StepStats
from eager.errors import EagerError
from eager.eval.budget import retry_theta
from eager.eval.code import code_verifier
from eager.eval.config import PROVENANCE_FIELDS, EvalConfig, stored_config, with_legacy_values
from eager.eval.datasets import Problem, format_prompt, load_problems
from eager.eval.executors import Executor, LocalExecutor, ModelSpec, absolute_model, open_executor
from eager.eval.grading import Grader
from eager.eval.methods import EVAL_METHODS, INIT_METHOD
from eager.eval.records import (
    ExtraJournal,
    MethodRecords,
    RunLock,
    Session,
    check_config,
    extra_tree_entry,
    merged_record,
    prepare_out_dir,
    tree_record,
    write_config,
)
from eager.eval.report import write_report
from eager.eval.verify import GoldAnswerVerifier, Verifier, safe, verifier_name

if TYPE_CHECKING:
    from eager.eval.distributed import RayOptions


@dataclass(frozen=True)
class Progress:
    """What a progress display needs; sent after every engine step and every record.

    Attributes:
        phase: "trees" (parallel and eager-init) or "extra round N".
        trees_done, trees_total: trees finished / sent in this phase.
        live_branches: branches decoding right now.
        tokens_per_s: generated tokens per second in this phase.
        records_written: final records written by this run so far (all methods).
        elapsed_s, steps, trees_in_flight: of this phase's executor run (for an ETA).
    """

    phase: str
    trees_done: int
    trees_total: int
    live_branches: int
    tokens_per_s: float
    records_written: int
    elapsed_s: float = 0.0
    steps: int = 0
    trees_in_flight: int = 0


ProgressFn = Callable[[Progress], None]


@dataclass
class HardPrompt:
    """A prompt that reallocation owes extra sequences."""

    method: str
    index: int
    problem: Problem
    M: int
    extra: int


@dataclass(frozen=True)
class Target:
    """What a finished tree's result is for: a method's record, or an extra tree of a hard prompt."""

    method: str
    problem: Problem
    M: int
    attempt: int = 0
    hard: HardPrompt | None = None


def tree_key(problem: Problem, M: int, method: str, attempt: int = 0) -> tuple[int, ...]:
    return (zlib.crc32(problem.id.encode("utf-8")), M, EVAL_METHODS[method].phase, attempt)


class EvalRun:
    """One ``eager eval``: the records on disk, the executor, and the phases that fill them."""

    def __init__(self, config: EvalConfig, out: Path, problems: list[Problem], verify: Verifier, on_progress: ProgressFn | None) -> None:
        self.config = config
        self.out = out
        self.problems = problems
        self.verify = verify
        self.on_progress = on_progress
        self.executor: Executor | None = None
        self.records: dict[str, MethodRecords] = {}
        self.journals: dict[str, ExtraJournal] = {}
        self.records_written = 0

    def open(self, stack: ExitStack) -> None:
        for method in (*self.config.tree_methods, *self.config.reallocation_methods):
            path = self.out / f"{method}.jsonl"
            self.records[method] = stack.enter_context(closing(MethodRecords(path, keep=method == INIT_METHOD)))
        for method in self.config.reallocation_methods:
            self.journals[method] = stack.enter_context(closing(ExtraJournal(self.out / f".extra-{method}.jsonl")))

    @property
    def complete(self) -> bool:
        return all(log.has(p, M) for log in self.records.values() for p in self.problems for M in self.config.M)

    # -- phase 1: parallel and eager-init trees ------------------------------------------

    def grow_trees(self) -> None:
        work = [
            (self._request(problem, EVAL_METHODS[method].tree_method, self.config.branching_at(M), tree_key(problem, M, method)),
             Target(method, problem, M))
            for M in self.config.M
            for method in self.config.tree_methods
            for problem in self.problems
            if not self.records[method].has(problem, M)
        ]
        self._run(work, "trees", self._tree_done)

    def _tree_done(self, target: Target, request: TreeRequest, result: GenerationResult) -> None:
        self._write(target.method, tree_record(target.method, target.problem, target.M, result, self.verify, self.config.save_entropies))

    # -- phase 2: reallocation -------------------------------------------------------------

    def reallocate(self) -> None:
        pending = [item for method in self.config.reallocation_methods for M in self.config.M for item in self._plan(method, M)]
        round_number = 0
        while pending:
            round_number += 1
            self._run([self._extra_tree(item) for item in pending], f"extra round {round_number}", self._extra_tree_done)
            pending = [item for item in pending if self._remaining(item) > 0]

    def _extra_tree_done(self, target: Target, request: TreeRequest, result: GenerationResult) -> None:
        item = target.hard
        entry = extra_tree_entry(
            item.method, item.problem, item.M, target.attempt, request.branching.theta, request.branching.max_sequences, result, self.verify,
            self.config.save_entropies,
        )
        self.journals[item.method].append(entry)
        if self._remaining(item) <= 0:
            self._finish_hard(item)

    def _plan(self, method: str, M: int) -> list[HardPrompt]:
        """Write the records of prompts that get no extra; return those still owed some."""
        records = self.records[method]
        if all(records.has(p, M) for p in self.problems):
            return []
        init_records = self.records[INIT_METHOD]
        init = [init_records.by_key[(p.id, M)] for p in self.problems]
        plan = EVAL_METHODS[method].plan(init, M, self.config.reallocation)
        pending = []
        for index, problem in enumerate(self.problems):
            if records.has(problem, M):
                continue
            item = HardPrompt(method, index, problem, M, plan.get(index, 0))
            if self._remaining(item) > 0:
                pending.append(item)
            else:
                self._finish_hard(item)
        return pending

    def _remaining(self, item: HardPrompt) -> int:
        made = sum(len(tree["sequences"]) for tree in self.journals[item.method].of(item.problem, item.M))
        return item.extra - made

    def _extra_tree(self, item: HardPrompt) -> tuple[TreeRequest, Target]:
        cfg = self.config
        realloc = cfg.reallocation
        attempt = len(self.journals[item.method].of(item.problem, item.M))
        at_cap = len(self.records[INIT_METHOD].by_key[(item.problem.id, item.M)]["sequences"]) >= item.M
        theta = retry_theta(cfg.branching.theta, attempt, at_cap=at_cap, decay=realloc.retry_decay, late_decay=realloc.retry_late_decay)
        size = min(self._remaining(item), self.executor.max_sequences)
        branching = replace(cfg.branching, max_sequences=size, theta=theta)
        key = tree_key(item.problem, item.M, item.method, attempt)
        request = self._request(item.problem, EVAL_METHODS[INIT_METHOD].tree_method, branching, key)
        return request, Target(item.method, item.problem, item.M, attempt, hard=item)

    def _finish_hard(self, item: HardPrompt) -> None:
        init = self.records[INIT_METHOD].by_key[(item.problem.id, item.M)]
        trees = self.journals[item.method].of(item.problem, item.M)
        self._write(item.method, merged_record(item.method, init, trees, item.extra))

    # -- the executor ------------------------------------------------------------------------

    def _request(self, problem: Problem, method: str, branching, key: tuple[int, ...]) -> TreeRequest:
        cfg = self.config
        return TreeRequest(format_prompt(problem, cfg.template), method, branching, cfg.sampling, key=key, chat=cfg.chat)

    def _run(self, work: list[tuple[TreeRequest, Target]], phase: str, finished: Callable[[Target, TreeRequest, GenerationResult], None]) -> None:
        if not work:
            return
        requests = [request for request, _ in work]
        progress = Progress(phase, 0, len(work), 0, 0.0, self.records_written)
        waiting: deque = deque()  # finished trees whose sequences are still being graded (code runs in the background)

        def on_step(stats: StepStats) -> None:
            nonlocal progress
            self._finish_graded(waiting, finished)  # a tree graded while others decode is written now
            rate = stats.generated_tokens / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
            progress = replace(
                progress, trees_done=stats.prompts_done, live_branches=stats.live_branches, tokens_per_s=rate,
                elapsed_s=stats.elapsed_s, steps=stats.steps, trees_in_flight=stats.prompts_in_flight,
            )
            self._report(progress)

        for done, (position, result) in enumerate(self.executor.run(requests, on_step), start=1):
            request, target = work[position]
            self.verify.prefetch(target.problem, [s.text for s in result.sequences])
            waiting.append((target, request, result))
            self._finish_graded(waiting, finished)
            progress = replace(progress, trees_done=done, records_written=self.records_written)
            self._report(progress)
        self._finish_graded(waiting, finished, wait=True)

    def _finish_graded(self, waiting: deque, finished: Callable[[Target, TreeRequest, GenerationResult], None], wait: bool = False) -> None:
        """Hand on the trees at the head of ``waiting`` whose grading is done (all, with ``wait``), in order."""
        while waiting and (wait or self.verify.ready(waiting[0][0].problem, [s.text for s in waiting[0][2].sequences])):
            finished(*waiting.popleft())

    def _write(self, method: str, record: dict[str, Any]) -> None:
        self.records[method].append(record)
        self.records_written += 1

    def _report(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)


# -- entry point ------------------------------------------------------------------------


def load_selection(config: EvalConfig) -> list[Problem]:
    problems = load_problems(
        config.dataset,
        config.split,
        question_field=config.question_field,
        answer_field=config.answer_field,
        id_field=config.id_field,
        limit=config.limit,
        offset=config.offset,
        ids=config.ids,
    )
    if not problems:
        raise EagerError(f"no problems selected from {config.dataset!r} (check limit, offset, ids)")
    for problem in problems:
        if not problem.question.strip():
            raise EagerError(f"problem {problem.id!r} has an empty question")
    return problems


def backend_sequences(config: EvalConfig) -> int:
    """Sequences the backend must hold at once: the largest tree any method grows."""
    factors = [1] + [
        EVAL_METHODS[m].extra_factor(config.reallocation) for m in config.methods if EVAL_METHODS[m].extra_factor
    ]
    return max(64, max(config.M) * max(factors))


def model_spec(config: EvalConfig) -> ModelSpec:
    """The spec of ``config``'s model, as a worker elsewhere would open it."""
    template = absolute_model(config.chat_template) if config.chat_template else None
    return ModelSpec(
        model=absolute_model(config.model), engine=config.engine, max_sequences=min(256, backend_sequences(config)), chat_template=template
    )


def open_run_executor(config: EvalConfig, backend: Backend | None, ray: "RayOptions | None") -> Executor:
    """A given backend runs here; Ray options shard over workers; else ``config.model`` loads here."""
    if backend is not None:
        if ray is not None:
            raise EagerError("give either a backend or Ray options, not both")
        return LocalExecutor(backend, max_prompts_in_flight=config.engine.max_prompts_in_flight)
    if ray is not None:
        from eager.eval.distributed import RayExecutor

        return RayExecutor(model_spec(config), ray)
    return open_executor(model_spec(config))


def with_first_provenance(out: Path, stored: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with the provenance keys of the run already in ``out`` (if any), which a resumption keeps.

    A run started with ``--theta auto`` (shipped 1.3) resumes under ``--theta 1.3``:
    the records are the same, so only the theta itself is compared.
    """
    import json

    from eager.eval.report import CONFIG_FILE

    try:
        previous = with_legacy_values(json.loads((out / CONFIG_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return stored  # no run yet (or an unreadable one, which check_config reports)
    return {**stored, **{key: previous[key] for key in PROVENANCE_FIELDS if key in previous}}


def run_eval(
    config: EvalConfig,
    backend: Backend | None = None,
    on_progress: ProgressFn | None = None,
    verifier: Verifier | None = None,
    ray: "RayOptions | None" = None,
) -> dict[str, Any]:
    """Run (or resume) every method of ``config`` and write the report; returns the summary.

    Args:
        config: the run; its ``out_dir`` may hold an earlier, interrupted run of the
            same configuration (it is resumed) or of the same configuration with
            other methods (they are added).
        backend: a loaded backend (a mock, or ``load_backend``); None loads
            ``config.model`` (only when something is left to generate).
        on_progress: called with :class:`Progress` after every engine step and
            every finished prompt.
        verifier: ``verifier(problem, completion_text) -> bool`` grades every
            sequence and decides which prompts full EAGER calls hard; an RL
            pipeline can pass its reward. Default: the last \\boxed{} answer
            against the gold answer, with Math-Verify; for code problems
            (humaneval), ``eager.eval.code.CodeVerifier``: the problem's tests
            run in the sandbox. A verifier that raises counts the sequence as wrong.
        ray: grow the trees on Ray workers (``eager.eval.distributed.RayOptions``), each
            loading ``config.model`` once; grading and every file stay here, so
            the records, the reallocation and resuming are those of a local run.
    """
    session = Session()  # the run's clock starts before data and model load
    if ray is not None:
        from eager.eval.distributed import import_ray

        import_ray()  # without Ray installed, fail before anything is written
    out = prepare_out_dir(Path(config.out_dir))
    with ExitStack() as stack:
        stack.enter_context(closing(RunLock(out)))
        problems = load_selection(config)
        for problem in problems:
            format_prompt(problem, config.template)  # a bad template fails now, before anything is written
        if verifier is None:  # code is graded by running it: the sandbox is checked before anything is written
            verifier = code_verifier(problems, config.grade_timeout_s, config.unsafe_exec)
            if verifier is not None:
                stack.callback(verifier.close)
        pending = check_config(out, with_first_provenance(out, stored_config(config, problems, verifier_name(verifier))), config.methods)
        verify = safe(verifier or GoldAnswerVerifier(Grader(config.grade_timeout_s)), extract=config.extract)
        run = EvalRun(config, out, problems, verify, on_progress)
        run.open(stack)
        if not run.complete:
            run.executor = stack.enter_context(closing(open_run_executor(config, backend, ray)))
        write_config(out, pending)  # the model and data are loaded: this run is real
        if run.executor is not None:
            with session.recorded(out):  # this session's elapsed time, for the report
                run.grow_trees()
                run.reallocate()
        return write_report(out)
