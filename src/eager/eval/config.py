"""One evaluation run's configuration: the data, the methods, and the nested rule configs.

``EvalConfig`` nests the configs every run shares (:class:`BranchingConfig`,
:class:`SamplingConfig`, :class:`EngineConfig`, :class:`ReallocationConfig`),
so a default lives in one place. :meth:`EvalConfig.of` takes the same options
as flat keywords. ``config.json`` stores them flat (:func:`stored_config`), so
a directory written before the nesting still resumes. A key that an older
``config.json`` lacks is read as the value that run used (:data:`LEGACY_VALUES`):
a run from before extraction modes graded leniently, so it resumes only under
``extract="lenient"``.

``theta="auto"`` in :meth:`EvalConfig.of` is the model's calibrated threshold
(``eager.api.resolve_theta``); ``theta_source`` records where the theta came from.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

from eager.api import AUTO, resolve_theta
from eager.core.config import BranchingConfig, EngineConfig, SamplingConfig, option, split_options
from eager.errors import EagerError
from eager.eval.budget import ReallocationConfig
from eager.eval.datasets import CODE_DATASETS, CODE_TEMPLATE, DEFAULT_TEMPLATE, Problem, template_for
from eager.eval.grading import DEFAULT_EXTRACT, EXTRACT_MODES, LEGACY_EXTRACT, check_extract_mode
from eager.eval.methods import EVAL_METHODS, INIT_METHOD, REALLOCATION_METHODS, TREE_METHODS
from eager.models import DEFAULT_MODEL, model_identity
from eager.remote import redact


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
        dataset: a registry name (see ``eager.eval.datasets.DATASETS``), a .jsonl path
            or ``hf:<dataset id>[:<config>]``.
        model: packaged model name, .gguf path or ``openai:`` spec (ignored when a backend is given).
        methods: any of ``EVAL_METHODS`` (a list or a comma string).
        M: one or more per-prompt sequence caps (the budget is M per prompt);
            ``branching.max_sequences`` is replaced by each of them.
        split, question_field, answer_field, id_field, limit, offset, ids: the
            problem selection (see ``eager.eval.datasets.load_problems``).
        template: the user message, with ``{question}``.
        chat: apply the model's chat template.
        chat_template: for remote models, a .gguf or Jinja file whose chat template
            is applied on this side (servers that cannot apply the model's own).
        branching, sampling, engine, reallocation: the nested rule configs.
        grade_timeout_s: Math-Verify limit per answer (code: each program's time limit).
        extract: how the answer is read from a sequence: "boxed" (the paper's rule:
            the last \\boxed{} only; no box or a truncated one is wrong) or "lenient"
            (else the text after "answer is", else the last number).
        unsafe_exec: code data sets run each program in the bubblewrap sandbox
            (``eager.eval.sandbox``), with ``grade_timeout_s`` as its time limit;
            True runs it without one (rlimits only), where bwrap is missing.
        theta_source: where ``branching.theta`` came from: "given", or what theta
            "auto" found for the model: "calibrated", "shipped" or "default"
            (``eager.api.ThetaChoice``). Provenance only: a run resumes whatever it says.
    """

    out_dir: str
    dataset: str
    model: str = DEFAULT_MODEL
    methods: tuple[str, ...] = tuple(EVAL_METHODS)
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
    chat_template: str | None = None
    branching: BranchingConfig = field(default_factory=BranchingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    reallocation: ReallocationConfig = field(default_factory=ReallocationConfig)
    grade_timeout_s: float = 5.0
    extract: str = option(
        DEFAULT_EXTRACT,
        "answers: boxed = the last \\boxed{} only, as the paper (an unboxed or truncated chain is wrong); "
        "lenient = else the text after 'answer is', else the last number (default: {default})",
        choices=EXTRACT_MODES,
    )
    theta_source: str = "given"
    unsafe_exec: bool = option(False, "code data sets: run model code WITHOUT the bubblewrap sandbox (rlimits and a separate process only), where bwrap is missing")
    save_entropies: bool = option(False, "records also keep each sequence's token entropies and texts and its fork's alternatives (for eager view; larger records)")

    @classmethod
    def of(cls, **options: Any) -> "EvalConfig":
        """An EvalConfig from flat keywords: its own fields and any field of the nested configs.

        ``theta="auto"`` resolves to the calibrated theta of ``model`` (and sets ``theta_source``).
        """
        own = {f.name for f in fields(cls)}
        mine = {k: v for k, v in options.items() if k in own}
        rest = {k: v for k, v in options.items() if k not in own}
        b, s, e, r = split_options(rest, BranchingConfig, SamplingConfig, EngineConfig, ReallocationConfig)
        if b.get("theta") == AUTO:
            rules = replace(mine.get("branching", BranchingConfig()), **{k: v for k, v in b.items() if k != "theta"})
            choice = resolve_theta(AUTO, model=mine.get("model", DEFAULT_MODEL), branching=rules)
            b["theta"], mine["theta_source"] = choice.value, choice.source
        return cls(
            **mine,
            branching=replace(mine.get("branching", BranchingConfig()), **b),
            sampling=replace(mine.get("sampling", SamplingConfig()), **s),
            engine=replace(mine.get("engine", EngineConfig()), **e),
            reallocation=replace(mine.get("reallocation", ReallocationConfig()), **r),
        )

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "out_dir", str(self.out_dir))
        set_(self, "methods", self._checked_methods())
        set_(self, "M", self._checked_budgets())
        if self.ids is not None:
            set_(self, "ids", tuple(str(i) for i in _as_tuple(self.ids, "ids")))
        if "{question}" not in self.template:
            raise EagerError("the prompt template must contain the placeholder {question}")
        check_extract_mode(self.extract)
        if not self.grade_timeout_s > 0:
            raise EagerError(f"grade_timeout_s must be > 0 s, got {self.grade_timeout_s}")
        if self.sampling.max_tokens >= self.engine.ctx:
            raise EagerError(f"max_tokens {self.sampling.max_tokens} does not fit in the context of {self.engine.ctx} tokens; lower max_tokens or raise ctx")

    def _checked_methods(self) -> tuple[str, ...]:
        methods = _as_tuple(self.methods, "methods")
        if not methods:
            raise EagerError(f"no method given; choose from {', '.join(EVAL_METHODS)}")
        for method in methods:
            if method not in EVAL_METHODS:
                raise EagerError(f"unknown method {method!r}; valid methods: {', '.join(EVAL_METHODS)}")
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

    def branching_at(self, M: int) -> BranchingConfig:
        return replace(self.branching, max_sequences=M)

    @property
    def tree_methods(self) -> tuple[str, ...]:
        """Methods whose trees the engine grows first: eager-init whenever any EAGER method is asked for."""
        wanted = set(self.methods)
        if wanted & set(REALLOCATION_METHODS):
            wanted.add(INIT_METHOD)
        return tuple(m for m in TREE_METHODS if m in wanted)

    @property
    def reallocation_methods(self) -> tuple[str, ...]:
        return tuple(m for m in REALLOCATION_METHODS if m in self.methods)


# Fields that do not change a record: they may differ between a run and its resumption.
RUNTIME_FIELDS = ("out_dir", "methods", "grade_timeout_s", "engine", "save_entropies")
# Nested configs stored flat in config.json; M replaces branching's max_sequences.
FLAT_FIELDS = ("branching", "sampling", "reallocation")


def stored_config(config: EvalConfig, problems: Sequence[Problem], verifier_label: str) -> dict[str, Any]:
    """What config.json holds: every field that shapes the records, and what was selected."""
    stored: dict[str, Any] = {}
    for f in fields(config):
        if f.name in RUNTIME_FIELDS:
            continue
        value = getattr(config, f.name)
        if f.name in FLAT_FIELDS:
            stored.update({g.name: getattr(value, g.name) for g in fields(value) if g.name != "max_sequences"})
        else:
            stored[f.name] = value
    stored["model"] = redact(config.model)  # an openai: URL's credentials are used, never stored
    stored["kv_type"] = config.engine.kv_type  # the cache's number format changes outputs; its size does not
    stored["flash_attn"] = config.engine.flash_attn
    stored["M"] = list(config.M)
    stored["ids"] = sorted(config.ids) if config.ids is not None else None
    if Path(config.dataset).is_file():  # one file, however its path is spelled
        stored["dataset"] = str(Path(config.dataset).resolve())
    if problems:  # the template the prompts were made from (the default: the problems' own)
        stored["template"] = template_for(problems[0], config.template)
    stored["n_problems"] = len(problems)
    stored["problems_sha256"] = problems_digest(problems)
    stored["verifier"] = verifier_label
    stored["environment"] = environment(config)
    return stored


# Distributions whose versions a run records (their code shapes the records).
VERSIONED = ("eager", "llama-cpp-python", "numpy", "math-verify")


def environment(config: EvalConfig) -> dict[str, Any]:
    """Where and with what a run ran: versions, engine settings, the model file, the host, when.

    Stored in config.json as "environment", which a resumed run does not compare
    (``eager.eval.records.NOT_COMPARED``): a run may resume on another machine.
    """
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable_cpus = os.cpu_count()
    return {
        "versions": {name: _version(name) for name in VERSIONED},
        "engine": asdict(config.engine),  # ctx, threads (None: the usable CPUs), prompts in flight, KV type
        "threads": config.engine.threads or usable_cpus,  # what a local engine ran with
        "model_sha256": model_sha256(config.model),
        "host_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "written_utc": utc_now(),
    }


def model_sha256(model: str) -> str | None:
    """The GGUF's sha256: a packaged model's as recorded, a local file's computed once
    (``eager.models.model_identity``); None for a remote server or anything else."""
    if model.startswith("openai:"):
        return None
    try:
        return model_identity(model).removeprefix("gguf:")
    except (EagerError, OSError):
        return None


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def utc_now() -> str:
    """The time now in UTC, ISO 8601 to the second: 2025-01-31T12:00:00Z."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# What a config.json written before a key existed meant by its absence.
LEGACY_VALUES: dict[str, Any] = {"extract": LEGACY_EXTRACT, "chat_template": None, "kv_type": "f16", "flash_attn": "auto", "theta_source": "given", "unsafe_exec": False}
# Keys of config.json that say where a value came from, not what it is: a resumed run keeps the first run's.
PROVENANCE_FIELDS = ("theta_source",)


def with_legacy_values(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored configuration with the keys it predates filled in as that run behaved.

    A code run written before config.json recorded the code template holds the math
    default there, but its prompts used the code template: read it as that one.
    """
    filled = {**LEGACY_VALUES, **stored}
    if filled.get("dataset") in CODE_DATASETS and filled.get("template") == DEFAULT_TEMPLATE:
        filled["template"] = CODE_TEMPLATE
    return filled


def problems_digest(problems: Sequence[Problem]) -> str:
    payload = json.dumps([[p.id, p.question, p.gold] for p in problems], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
