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

Where the trees grow is an :class:`Executor`: :class:`LocalExecutor` runs the
engine on a backend in this process; ``eager.distributed.RayExecutor`` shards
the trees over Ray workers, each with its own executor opened by the same
:func:`open_executor`. Either way this process grades every result and writes
every file, so a run's records do not depend on where its trees grew.

Everything is resumable: each finished prompt is one fsynced line in
``<method>.jsonl``; each finished extra tree is one line in the journal
``.extra-<method>.jsonl``. A restart with the same configuration skips what is
written and regenerates only what is not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from contextlib import ExitStack, closing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

from eager.api import DEFAULT_CTX, load_backend, make_requests
from eager.backends.base import Backend
from eager.budget import adapt_plan, full_plan, retry_theta
from eager.config import BranchingConfig, SamplingConfig
from eager.datasets import DEFAULT_TEMPLATE, Problem, format_prompt, load_problems
from eager.engine import Engine, StepStats
from eager.errors import EagerError
from eager.grading import Grader, extract_answer, grade
from eager.models import DEFAULT_MODEL
from eager.report import CONFIG_FILE, read_jsonl, write_report
from eager.results import GenerationResult, SequenceResult

if TYPE_CHECKING:
    from eager.distributed import RayOptions

log = logging.getLogger(__name__)

Verifier = Callable[[Problem, str], bool]

# The methods, in report order. Tree methods map to the engine strategy that
# grows their trees; reallocation methods are planned in REALLOCATIONS below.
METHODS = ("parallel", "eager-init", "eager-adapt", "eager")
TREE_METHODS = {"parallel": "parallel", "eager-init": "eager-init"}
INIT_METHOD = "eager-init"

# The phase part of a tree's sampling key.
PHASES = {"parallel": 0, "eager-init": 1, "eager-adapt": 2, "eager": 3}


# -- configuration ----------------------------------------------------------------------


def _as_tuple(value: Any, what: str) -> tuple:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, int):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise EagerError(f"{what} must be a list, got {value!r}") from None


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run; every check raises :class:`EagerError`.

    Attributes:
        out_dir: where records, config.json and the report go.
        dataset: a registry name (see ``eager.datasets.DATASETS``), a .jsonl path
            or ``hf:<dataset id>[:<config>]``.
        model: packaged model name or .gguf path (ignored when a backend is given).
        methods: any of ``METHODS`` (a list or a comma string).
        M: one or more per-prompt sequence caps (the budget is M per prompt).
        split, question_field, answer_field, id_field, limit, offset, ids: the
            problem selection (see ``eager.datasets.load_problems``).
        template: the user message, with ``{question}``.
        chat: apply the model's chat template.
        theta .. end_of_thinking: the EAGER-init rules (``BranchingConfig``).
        temperature .. seed: sampling (``SamplingConfig``).
        adapt_extra_factor: eager-adapt gives a hard prompt at most this x M extra.
        full_extra_factor: full EAGER gives a hard prompt at most this x M extra.
        retry_decay, retry_late_decay: the threshold schedule of extra trees of
            prompts below the cap (``eager.budget.retry_theta``).
        grade_timeout_s: Math-Verify limit per answer.
        ctx, threads: the llama.cpp context cells and CPU threads.
        max_prompts_in_flight: cap on trees decoded together (None: as many as fit).
    """

    out_dir: str
    dataset: str
    model: str = DEFAULT_MODEL
    methods: tuple[str, ...] = METHODS
    M: tuple[int, ...] = (BranchingConfig.max_sequences,)
    split: str = "test"
    question_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    limit: int | None = None
    offset: int = 0
    ids: tuple[str, ...] | None = None
    template: str = DEFAULT_TEMPLATE
    chat: bool = True
    theta: float = BranchingConfig.theta
    dynamic_theta: bool = BranchingConfig.dynamic_theta
    window: int = BranchingConfig.window
    entropy: str = BranchingConfig.entropy
    entropy_top_k: int = BranchingConfig.entropy_top_k
    end_of_thinking: str = BranchingConfig.end_of_thinking
    temperature: float = SamplingConfig.temperature
    top_p: float = SamplingConfig.top_p
    top_k: int = SamplingConfig.top_k
    max_tokens: int = SamplingConfig.max_tokens
    seed: int = SamplingConfig.seed
    adapt_extra_factor: int = 3
    full_extra_factor: int = 1
    retry_decay: float = 0.8
    retry_late_decay: float = 0.9
    grade_timeout_s: float = 5.0
    ctx: int = DEFAULT_CTX
    threads: int | None = None
    max_prompts_in_flight: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "out_dir", str(self.out_dir))
        set_(self, "methods", self._checked_methods())
        set_(self, "M", self._checked_budgets())
        if self.ids is not None:
            set_(self, "ids", tuple(str(i) for i in _as_tuple(self.ids, "ids")))
        if "{question}" not in self.template:
            raise EagerError("the prompt template must contain the placeholder {question}")
        self.branching(max(self.M))  # BranchingConfig and SamplingConfig check their own fields
        self.sampling()
        for name in ("adapt_extra_factor", "full_extra_factor"):
            if getattr(self, name) < 0:
                raise EagerError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("retry_decay", "retry_late_decay"):
            if not 0 < getattr(self, name) <= 1:
                raise EagerError(f"{name.replace('_', '-')} must be in (0, 1], got {getattr(self, name)}")
        if not self.grade_timeout_s > 0:
            raise EagerError(f"grade timeout must be > 0 s, got {self.grade_timeout_s}")
        if self.ctx < 16:
            raise EagerError(f"--ctx must be at least 16 cells, got {self.ctx}")
        if self.max_tokens >= self.ctx:
            raise EagerError(f"max-tokens {self.max_tokens} does not fit in the context of {self.ctx} tokens; lower --max-tokens or raise --ctx")
        if self.threads is not None and self.threads < 1:
            raise EagerError(f"--threads must be >= 1, got {self.threads}")
        if self.max_prompts_in_flight is not None and self.max_prompts_in_flight < 1:
            raise EagerError(f"max prompts in flight must be >= 1, got {self.max_prompts_in_flight}")

    def _checked_methods(self) -> tuple[str, ...]:
        methods = _as_tuple(self.methods, "methods")
        if not methods:
            raise EagerError(f"no method given; choose from {', '.join(METHODS)}")
        for method in methods:
            if method not in METHODS:
                raise EagerError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
        return tuple(dict.fromkeys(methods))

    def _checked_budgets(self) -> tuple[int, ...]:
        values = _as_tuple(self.M, "M")
        if not values:
            raise EagerError("give at least one M (sequences per prompt)")
        budgets = []
        for value in values:
            try:
                budgets.append(int(value))
            except (TypeError, ValueError):
                raise EagerError(f"M must be integers like 4,8,16, got {value!r}") from None
            if budgets[-1] < 1 or budgets[-1] != float(value):
                raise EagerError(f"M must be integers >= 1, got {value!r}")
        return tuple(sorted(set(budgets)))

    def branching(self, M: int) -> BranchingConfig:
        return BranchingConfig(
            max_sequences=M,
            theta=self.theta,
            dynamic_theta=self.dynamic_theta,
            window=self.window,
            entropy=self.entropy,
            entropy_top_k=self.entropy_top_k,
            end_of_thinking=self.end_of_thinking,
        )

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, max_tokens=self.max_tokens, seed=self.seed
        )

    @property
    def tree_methods(self) -> tuple[str, ...]:
        """Methods whose trees the engine grows first: eager-init whenever any EAGER method is asked for."""
        wanted = set(self.methods)
        if wanted & set(REALLOCATIONS):
            wanted.add(INIT_METHOD)
        return tuple(m for m in TREE_METHODS if m in wanted)

    @property
    def reallocation_methods(self) -> tuple[str, ...]:
        return tuple(m for m in REALLOCATIONS if m in self.methods)


# Fields that do not change a record: they may differ between a run and its resumption.
RUNTIME_FIELDS = ("out_dir", "methods", "grade_timeout_s", "ctx", "threads", "max_prompts_in_flight")


def stored_config(config: EvalConfig, problems: Sequence[Problem], verifier_label: str) -> dict[str, Any]:
    """What config.json holds: every field that shapes the records, and what was selected."""
    stored = {f.name: getattr(config, f.name) for f in fields(config) if f.name not in RUNTIME_FIELDS}
    stored["M"] = list(config.M)
    stored["ids"] = sorted(config.ids) if config.ids is not None else None
    if Path(config.dataset).is_file():  # one file, however its path is spelled
        stored["dataset"] = str(Path(config.dataset).resolve())
    stored["n_problems"] = len(problems)
    stored["problems_sha256"] = problems_digest(problems)
    stored["verifier"] = verifier_label
    return stored


def problems_digest(problems: Sequence[Problem]) -> str:
    payload = json.dumps([[p.id, p.question, p.gold] for p in problems], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


# -- progress ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What a progress display needs; sent after every engine step and every record.

    Attributes:
        phase: "trees" (parallel and eager-init) or "extra round N".
        trees_done, trees_total: engine trees finished / sent in this phase.
        live_branches: branches decoding right now.
        tokens_per_s: generated tokens per second in this phase.
        records_written: final records written by this run so far (all methods).
    """

    phase: str
    trees_done: int
    trees_total: int
    live_branches: int
    tokens_per_s: float
    records_written: int


ProgressFn = Callable[[Progress], None]


# -- verification -----------------------------------------------------------------------


@dataclass(frozen=True)
class GoldAnswerVerifier:
    """The default verifier: the last \\boxed{} answer, graded against the gold by Math-Verify."""

    grader: Grader = field(default_factory=Grader)

    def __call__(self, problem: Problem, text: str) -> bool:
        return grade(text, problem.gold, self.grader)[1]


def verifier_name(verifier: Verifier | None) -> str:
    if verifier is None or isinstance(verifier, GoldAnswerVerifier):
        return "gold-answer (math-verify)"
    name = getattr(verifier, "__qualname__", None) or type(verifier).__qualname__
    return f"{getattr(verifier, '__module__', '?')}.{name}"


def _safe(verifier: Verifier) -> Verifier:
    """Grading never crashes a run: a failing verifier counts the sequence as wrong."""

    def verify(problem: Problem, text: str) -> bool:
        try:
            return bool(verifier(problem, text))
        except Exception as error:  # a user's reward function may raise anything
            log.warning("verifier failed on %s (%s: %s); counted as wrong", problem.id, type(error).__name__, error)
            return False

    return verify


def _safe_answer(text: str) -> str | None:
    try:
        return extract_answer(text)
    except Exception as error:
        log.warning("answer extraction failed (%s: %s)", type(error).__name__, error)
        return None


# -- records ----------------------------------------------------------------------------


def graded_sequences(result: GenerationResult, problem: Problem, verify: Verifier) -> list[dict[str, Any]]:
    """One dict per sequence; "parent" is a position in this list (tree-local)."""
    return [_graded(seq, problem, verify) for seq in result.sequences]


def _graded(seq: SequenceResult, problem: Problem, verify: Verifier) -> dict[str, Any]:
    return {
        "text": seq.text,
        "n_tokens": len(seq.token_ids),
        "parent": seq.parent,
        "fork_at": seq.fork_at,
        "finish_reason": seq.finish_reason,
        "answer": _safe_answer(seq.text),
        "correct": verify(problem, seq.text),
        "round": 0,
    }


def tree_record(method: str, problem: Problem, M: int, result: GenerationResult, verify: Verifier) -> dict[str, Any]:
    """The record of a parallel or eager-init prompt."""
    return {
        "id": problem.id,
        "question": problem.question,
        "gold": problem.gold,
        "method": method,
        "M": M,
        "prompt_tokens": result.prompt_tokens,
        "generated_tokens": result.generated_tokens,
        "sequence_tokens": result.sequence_tokens,
        "wall_s": round(result.wall_s, 4),
        "latency_s": round(result.latency_s, 4),
        "forks": len(result.forks),
        "sequences": graded_sequences(result, problem, verify),
    }


def extra_tree_entry(
    method: str, problem: Problem, M: int, attempt: int, request_theta: float, max_sequences: int,
    result: GenerationResult, verify: Verifier,
) -> dict[str, Any]:
    """A journal line: one finished extra tree of a hard prompt."""
    return {
        "id": problem.id,
        "method": method,
        "M": M,
        "attempt": attempt,
        "theta": request_theta,
        "max_sequences": max_sequences,
        "generated_tokens": result.generated_tokens,
        "sequence_tokens": result.sequence_tokens,
        "wall_s": round(result.wall_s, 4),
        "forks": len(result.forks),
        "sequences": graded_sequences(result, problem, verify),
    }


def merged_record(method: str, init: dict[str, Any], trees: Sequence[dict[str, Any]], extra: int) -> dict[str, Any]:
    """An eager-adapt / eager record: the init tree's sequences (round 0), then each
    extra tree's (round = attempt + 1), parents renumbered to positions in the list."""
    sequences = [dict(s, round=0) for s in init["sequences"]]
    for tree in trees:
        offset = len(sequences)
        for s in tree["sequences"]:
            parent = None if s["parent"] is None else s["parent"] + offset
            sequences.append(dict(s, parent=parent, round=tree["attempt"] + 1))
    parts = [init, *trees]
    return {
        "id": init["id"],
        "question": init["question"],
        "gold": init["gold"],
        "method": method,
        "M": init["M"],
        "prompt_tokens": init["prompt_tokens"],
        "generated_tokens": sum(p["generated_tokens"] for p in parts),
        "sequence_tokens": sum(p["sequence_tokens"] for p in parts),
        "wall_s": round(sum(p["wall_s"] for p in parts), 4),
        "forks": sum(p["forks"] for p in parts),
        "extra": extra,
        "rounds": len(trees),
        "sequences": sequences,
    }


# -- reallocation plans -----------------------------------------------------------------


def _plan_adapt(init: Sequence[dict[str, Any]], M: int, config: EvalConfig) -> dict[int, int]:
    counts = [len(r["sequences"]) for r in init]
    return adapt_plan(counts, M, config.adapt_extra_factor)


def _plan_full(init: Sequence[dict[str, Any]], M: int, config: EvalConfig) -> dict[int, int]:
    counts = [len(r["sequences"]) for r in init]
    solved = [any(s["correct"] for s in r["sequences"]) for r in init]
    return full_plan(counts, solved, M, config.full_extra_factor)


# method -> plan(init records in problem order, M, config) -> {problem index: extra sequences}
REALLOCATIONS: dict[str, Callable[[Sequence[dict[str, Any]], int, EvalConfig], dict[int, int]]] = {
    "eager-adapt": _plan_adapt,
    "eager": _plan_full,
}


# -- files ------------------------------------------------------------------------------


def prepare_out_dir(path: Path) -> Path:
    """Create the output folder and prove it is writable, before any model loads."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise EagerError(f"cannot write to output directory {path}: {error.strerror or error}") from None
    return path


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def check_or_write_config(out: Path, stored: dict[str, Any], methods: Sequence[str]) -> None:
    """Refuse a directory that holds another run; record this run's methods with the old ones."""
    path = out / CONFIG_FILE
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise EagerError(f"cannot read {path}: {error}") from None
        differ = [key for key in sorted(set(stored) | set(previous)) if key != "methods" and previous.get(key) != stored.get(key)]
        if differ:
            shown = ", ".join(f"{k} ({_short(previous.get(k))} -> {_short(stored.get(k))})" for k in differ)
            raise EagerError(f"{out} holds a run with a different configuration: {shown}; use another --out")
        known = previous.get("methods", [])
    else:
        if any(out.glob("*.jsonl")):
            raise EagerError(f"{out} holds records but no {CONFIG_FILE}; use another --out")
        known = []
    union = [m for m in METHODS if m in known or m in methods]
    if path.exists() and union == known:
        return
    _write_atomic(path, json.dumps({**stored, "methods": union}, indent=2, ensure_ascii=False) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _drop_torn_tail(path: Path) -> None:
    """A crash can leave the last line half-written: cut it so appends start on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    log.warning("%s: dropping a truncated last line (%d bytes) left by an interrupted run", path, len(data) - keep)
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


class RecordLog:
    """An append-only JSON-lines file: one fsynced line per finished unit of work.

    Subclasses index what they need from the lines already there (``_index``),
    at open and after every append.
    """

    def __init__(self, path: Path) -> None:
        _drop_torn_tail(path)
        self.path = path
        self._file = None
        for entry in read_jsonl(path) if path.exists() else []:
            self._index(entry)

    def _index(self, entry: dict[str, Any]) -> None:
        raise NotImplementedError

    def append(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._index(entry)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class MethodRecords(RecordLog):
    """``<method>.jsonl``: which (problem id, M) are done; the records themselves only
    when ``keep`` (eager-init's, which the reallocation methods build on)."""

    def __init__(self, path: Path, *, keep: bool = False) -> None:
        self.keep = keep
        self.done: set[tuple[str, int]] = set()
        self.by_key: dict[tuple[str, int], dict[str, Any]] = {}
        super().__init__(path)

    def _index(self, entry: dict[str, Any]) -> None:
        key = (str(entry["id"]), int(entry["M"]))
        self.done.add(key)
        if self.keep:
            self.by_key.setdefault(key, entry)

    def has(self, problem: Problem, M: int) -> bool:
        return (problem.id, M) in self.done


class ExtraJournal(RecordLog):
    """``.extra-<method>.jsonl``: the extra trees of hard prompts, in attempt order."""

    def __init__(self, path: Path) -> None:
        self.trees: dict[tuple[str, int], list[dict[str, Any]]] = {}
        super().__init__(path)

    def _index(self, entry: dict[str, Any]) -> None:
        trees = self.trees.setdefault((str(entry["id"]), int(entry["M"])), [])
        if entry["attempt"] == len(trees):  # anything else repeats a tree already kept
            trees.append(entry)

    def of(self, problem: Problem, M: int) -> list[dict[str, Any]]:
        return self.trees.get((problem.id, M), [])


# -- executors: where trees grow -------------------------------------------------------


@dataclass(frozen=True)
class TreeTask:
    """One tree to grow, as text: what an executor needs, wherever it runs.

    ``key`` keys the tree's sampling (see :func:`tree_key`), so the tree does not
    depend on which executor, worker or batch grows it.
    """

    prompt: str
    strategy: str
    branching: BranchingConfig
    sampling: SamplingConfig
    chat: bool
    key: tuple[int, ...]


StepFn = Callable[[StepStats], None]


class Executor(Protocol):
    """Grows trees: yields (task position, result) as each tree finishes, in any order."""

    @property
    def max_sequences(self) -> int:
        """The largest tree (sequences) it can grow."""
        ...

    def run(self, tasks: Sequence[TreeTask], on_step: StepFn | None = None) -> Iterator[tuple[int, GenerationResult]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ModelSpec:
    """How to open a model for growing trees, here or in a Ray worker.

    Attributes:
        model: packaged model name or .gguf path.
        ctx, max_sequences, threads: the backend's context cells, sequences held
            at once and CPU threads (None: llama.cpp's choice).
        max_prompts_in_flight: cap on trees decoded together (None: as many as fit).
    """

    model: str
    ctx: int = DEFAULT_CTX
    max_sequences: int = 64
    threads: int | None = None
    max_prompts_in_flight: int | None = None


class LocalExecutor:
    """The engine over one backend in this process: tokenise, run, detokenise."""

    def __init__(self, backend: Backend, *, max_prompts_in_flight: int | None = None, owns_backend: bool = False) -> None:
        self.backend = backend
        self.max_prompts_in_flight = max_prompts_in_flight
        self.owns_backend = owns_backend

    @property
    def max_sequences(self) -> int:
        return self.backend.max_sequences

    def run(self, tasks: Sequence[TreeTask], on_step: StepFn | None = None) -> Iterator[tuple[int, GenerationResult]]:
        requests = [
            make_requests(
                [task.prompt], self.backend, method=task.strategy, branching=task.branching,
                sampling=task.sampling, chat=task.chat, keys=[task.key],
            )[0]
            for task in tasks
        ]
        engine = Engine(self.backend, max_prompts_in_flight=self.max_prompts_in_flight, on_step=on_step)
        yield from engine.run(requests)

    def close(self) -> None:
        if self.owns_backend:
            self.backend.close()


class RemoteExecutor:
    """Trees grown on an OpenAI-compatible server (``openai:http://HOST:PORT/v1#name``).

    The server's own prefix cache shares a forked prefix; see docs/remote.md.
    Results of a batch come back when the batch ends; if the server fails
    mid-batch, the trees that finished are still yielded (so recorded) before
    the error is raised.
    """

    max_sequences = 256

    def __init__(self, server, *, max_concurrency: int = 16) -> None:
        self.server = server
        self.max_concurrency = max_concurrency

    def run(self, tasks: Sequence[TreeTask], on_step: StepFn | None = None) -> Iterator[tuple[int, GenerationResult]]:
        from eager.remote import RemoteDriver, RemoteGenerationError

        server = self.server
        requests = [
            make_requests(
                [task.prompt], server, method=task.strategy, branching=task.branching,
                sampling=task.sampling, chat=task.chat, keys=[task.key],
            )[0]
            for task in tasks
        ]
        texts = None if server.id_prompts else [server.dialect.prompt_text(task.prompt, task.chat) for task in tasks]
        driver = RemoteDriver(server, max_concurrency=self.max_concurrency, on_step=on_step)
        try:
            results = driver.run(requests, texts)
        except RemoteGenerationError as e:
            yield from ((i, r) for i, r in enumerate(e.results) if r is not None)
            raise
        yield from enumerate(results)

    def close(self) -> None:
        return None


def open_executor(spec: ModelSpec) -> Executor:
    """The one way from a model spec to an executor: a local run and every Ray worker call it."""
    from eager.remote import connect, parse_remote_model

    if remote := parse_remote_model(spec.model):
        url, served_model = remote
        return RemoteExecutor(connect(url, served_model))
    backend = load_backend(spec.model, ctx=spec.ctx, max_sequences=spec.max_sequences, threads=spec.threads)
    return LocalExecutor(backend, max_prompts_in_flight=spec.max_prompts_in_flight, owns_backend=True)


def model_spec(config: EvalConfig) -> ModelSpec:
    """The spec of ``config``'s model; a .gguf path is made absolute, as workers start elsewhere."""
    model = config.model
    if (os.sep in model or model.endswith(".gguf")) and Path(model).expanduser().is_file():
        model = str(Path(model).expanduser().resolve())
    return ModelSpec(
        model=model, ctx=config.ctx, max_sequences=min(256, backend_sequences(config)), threads=config.threads,
        max_prompts_in_flight=config.max_prompts_in_flight,
    )


# -- the run ----------------------------------------------------------------------------


@dataclass
class _Pending:
    """A hard prompt still owed extra sequences."""

    method: str
    index: int
    problem: Problem
    M: int
    extra: int


@dataclass
class TreeJob:
    """One engine request and what its result is for."""

    method: str  # the method whose records it feeds
    problem: Problem
    M: int
    strategy: str
    branching: BranchingConfig
    key: tuple[int, ...]
    attempt: int = 0  # extra trees: 0 for the first extra tree of a prompt
    owed: _Pending | None = None  # extra trees: the hard prompt they are for


def tree_key(problem: Problem, M: int, method: str, attempt: int = 0) -> tuple[int, ...]:
    return (zlib.crc32(problem.id.encode("utf-8")), M, PHASES[method], attempt)


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
        jobs = [
            TreeJob(method, problem, M, TREE_METHODS[method], self.config.branching(M), tree_key(problem, M, method))
            for M in self.config.M
            for method in self.config.tree_methods
            for problem in self.problems
            if not self.records[method].has(problem, M)
        ]

        self._run_jobs(jobs, "trees", self._tree_done)

    def _tree_done(self, job: TreeJob, result: GenerationResult) -> None:
        self._write(job.method, tree_record(job.method, job.problem, job.M, result, self.verify))

    # -- phase 2: reallocation -------------------------------------------------------------

    def reallocate(self) -> None:
        pending = [item for method in self.config.reallocation_methods for M in self.config.M for item in self._plan(method, M)]
        round_number = 0
        while pending:
            round_number += 1
            self._run_jobs([self._extra_job(item) for item in pending], f"extra round {round_number}", self._extra_tree_done)
            pending = [item for item in pending if self._remaining(item) > 0]

    def _extra_tree_done(self, job: TreeJob, result: GenerationResult) -> None:
        item = job.owed
        entry = extra_tree_entry(
            item.method, item.problem, item.M, job.attempt, job.branching.theta, job.branching.max_sequences, result, self.verify
        )
        self.journals[item.method].append(entry)
        if self._remaining(item) <= 0:
            self._finish_hard(item)

    def _plan(self, method: str, M: int) -> list[_Pending]:
        """Write the records of prompts that get no extra; return those still owed some."""
        records = self.records[method]
        if all(records.has(p, M) for p in self.problems):
            return []
        init_records = self.records[INIT_METHOD]
        init = [init_records.by_key[(p.id, M)] for p in self.problems]
        plan = REALLOCATIONS[method](init, M, self.config)
        pending = []
        for index, problem in enumerate(self.problems):
            if records.has(problem, M):
                continue
            item = _Pending(method, index, problem, M, plan.get(index, 0))
            if self._remaining(item) > 0:
                pending.append(item)
            else:
                self._finish_hard(item)
        return pending

    def _remaining(self, item: _Pending) -> int:
        made = sum(len(tree["sequences"]) for tree in self.journals[item.method].of(item.problem, item.M))
        return item.extra - made

    def _extra_job(self, item: _Pending) -> TreeJob:
        cfg = self.config
        attempt = len(self.journals[item.method].of(item.problem, item.M))
        at_cap = len(self.records[INIT_METHOD].by_key[(item.problem.id, item.M)]["sequences"]) >= item.M
        theta = retry_theta(cfg.theta, attempt, at_cap=at_cap, decay=cfg.retry_decay, late_decay=cfg.retry_late_decay)
        size = min(self._remaining(item), self.executor.max_sequences)
        branching = replace(cfg.branching(item.M), max_sequences=size, theta=theta)
        key = tree_key(item.problem, item.M, item.method, attempt)
        return TreeJob(item.method, item.problem, item.M, INIT_METHOD, branching, key, attempt, owed=item)

    def _finish_hard(self, item: _Pending) -> None:
        init = self.records[INIT_METHOD].by_key[(item.problem.id, item.M)]
        trees = self.journals[item.method].of(item.problem, item.M)
        self._write(item.method, merged_record(item.method, init, trees, item.extra))

    # -- the executor ------------------------------------------------------------------------

    def _run_jobs(self, jobs: list[TreeJob], phase: str, finished: Callable[[TreeJob, GenerationResult], None]) -> None:
        if not jobs:
            return
        cfg = self.config
        tasks = [
            TreeTask(format_prompt(job.problem, cfg.template), job.strategy, job.branching, cfg.sampling(), cfg.chat, job.key)
            for job in jobs
        ]
        progress = Progress(phase, 0, len(jobs), 0, 0.0, self.records_written)

        def on_step(stats: StepStats) -> None:
            nonlocal progress
            rate = stats.generated_tokens / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
            progress = replace(progress, trees_done=stats.prompts_done, live_branches=stats.live_branches, tokens_per_s=rate)
            self._report(progress)

        for done, (position, result) in enumerate(self.executor.run(tasks, on_step), start=1):
            finished(jobs[position], result)
            progress = replace(progress, trees_done=done, records_written=self.records_written)
            self._report(progress)

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
        raise EagerError(f"no problems selected from {config.dataset!r} (check --limit, --offset, --ids)")
    for problem in problems:
        if not problem.question.strip():
            raise EagerError(f"problem {problem.id!r} has an empty question")
    return problems


def backend_sequences(config: EvalConfig) -> int:
    """Sequences the backend must hold at once: the largest tree any method grows."""
    factors = [1]
    if "eager-adapt" in config.methods:
        factors.append(config.adapt_extra_factor)
    if "eager" in config.methods:
        factors.append(config.full_extra_factor)
    return max(64, max(config.M) * max(factors))


def open_run_executor(config: EvalConfig, backend: Backend | None, ray: "RayOptions | None") -> Executor:
    """A given backend runs here; Ray options shard over workers; else ``config.model`` loads here."""
    if backend is not None:
        if ray is not None:
            raise EagerError("give either a backend or Ray options, not both")
        return LocalExecutor(backend, max_prompts_in_flight=config.max_prompts_in_flight)
    if ray is not None:
        from eager.distributed import RayExecutor

        return RayExecutor(model_spec(config), ray)
    return open_executor(model_spec(config))


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
            against the gold answer, with Math-Verify. A verifier that raises
            counts the sequence as wrong.
        ray: grow the trees on Ray workers (``eager.distributed.RayOptions``), each
            loading ``config.model`` once; grading and every file stay here, so
            the records, the reallocation and resuming are those of a local run.
    """
    if ray is not None:
        from eager.distributed import import_ray

        import_ray()  # without Ray installed, fail before anything is written
    out = prepare_out_dir(Path(config.out_dir))
    problems = load_selection(config)
    check_or_write_config(out, stored_config(config, problems, verifier_name(verifier)), config.methods)
    verify = _safe(verifier or GoldAnswerVerifier(Grader(config.grade_timeout_s)))
    run = EvalRun(config, out, problems, verify, on_progress)
    with ExitStack() as stack:
        run.open(stack)
        if not run.complete:
            run.executor = stack.enter_context(closing(open_run_executor(config, backend, ray)))
            run.grow_trees()
            run.reallocate()
    return write_report(out)
