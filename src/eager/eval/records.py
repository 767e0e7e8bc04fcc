"""Run directories: graded records, resumable logs, and the stored configuration.

Each finished prompt is one fsynced line in ``<method>.jsonl``; each finished
extra tree one line in the journal ``.extra-<method>.jsonl``. A restart with
the same configuration skips what is written and regenerates only what is not.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from eager.core.results import GenerationResult, SequenceResult
from eager.errors import EagerError
from eager.eval.datasets import Problem
from eager.eval.config import LEGACY_VALUES, utc_now, with_legacy_values
from eager.eval.methods import EVAL_METHODS
from eager.eval.report import CONFIG_FILE, RECORD_FIELDS, SESSIONS_FILE, read_jsonl
from eager.eval.verify import Verifier, answer_of, details_of

log = logging.getLogger(__name__)


# -- records ----------------------------------------------------------------------------


def graded_sequences(result: GenerationResult, problem: Problem, verify: Verifier, entropies: bool = False) -> list[dict[str, Any]]:
    """One dict per sequence; "parent" is a position in this list (tree-local).

    "answer" and "answer_source" ("boxed", "fallback", "none") come from the run's
    extraction mode, which ``verify`` carries (``eager.eval.verify.safe``).
    With ``entropies`` (``--save-entropies``) each also keeps its own tokens'
    entropies and texts, and a child its "fork" (entropy, threshold, the two alternatives)."""
    graded = [_graded(seq, problem, verify) for seq in result.sequences]
    if entropies:
        forks = {f.child: f for f in result.forks}
        for seq, out in zip(result.sequences, graded):
            out.update(entropies=seq.own_entropies, pieces=seq.pieces)
            if seq.index in forks:
                out["fork"] = {k: v for k, v in asdict(forks[seq.index]).items() if k not in ("parent", "child")}
    return graded


def _graded(seq: SequenceResult, problem: Problem, verify: Verifier) -> dict[str, Any]:
    answer, source = answer_of(verify, seq.text)
    return {
        "text": seq.text,
        "n_tokens": len(seq.token_ids),
        "parent": seq.parent,
        "fork_at": seq.fork_at,
        "finish_reason": seq.finish_reason,
        "answer": answer,
        "answer_source": source,
        "correct": verify(problem, seq.text),
        **details_of(verify, problem, seq.text),  # code: "passed", "reason", "stderr"
        "round": 0,
    }


def tree_record(method: str, problem: Problem, M: int, result: GenerationResult, verify: Verifier, entropies: bool = False) -> dict[str, Any]:
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
        "preemptions": result.preemptions,
        "sequences": graded_sequences(result, problem, verify, entropies),
    }


def extra_tree_entry(
    method: str, problem: Problem, M: int, attempt: int, request_theta: float, max_sequences: int,
    result: GenerationResult, verify: Verifier, entropies: bool = False,
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
        "preemptions": result.preemptions,
        "sequences": graded_sequences(result, problem, verify, entropies),
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
        "preemptions": sum(p.get("preemptions", 0) for p in parts),
        "extra": extra,
        "rounds": len(trees),
        "sequences": sequences,
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


def _difference(key: str, previous: dict[str, Any], stored: dict[str, Any], *, legacy: bool) -> str:
    note = ""
    if legacy and key in LEGACY_VALUES:
        note = f"; written before the {key} option existed, that run used {_short(previous[key])}"
    return f"{key} ({_short(previous.get(key))} -> {_short(stored.get(key))}{note})"


# config.json keys that a resumed run may change: the methods (added), and the
# environment (versions, host, time stamp) of the session that wrote the file.
NOT_COMPARED = ("methods", "environment")


def check_config(out: Path, stored: dict[str, Any], methods: Sequence[str]) -> str | None:
    """Refuse a directory that holds another run; the config.json text to write (None: unchanged).

    Every key but :data:`NOT_COMPARED` must equal the stored one. The caller
    writes the text (:func:`write_config`) once the model and data are loaded,
    so a run that fails to start leaves no configuration behind.
    """
    path = out / CONFIG_FILE
    if path.exists():
        try:
            written = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise EagerError(f"cannot read {path}: {error}") from None
        previous = with_legacy_values(written)
        differ = [key for key in sorted(set(stored) | set(previous)) if key not in NOT_COMPARED and previous.get(key) != stored.get(key)]
        if differ:
            shown = ", ".join(_difference(key, previous, stored, legacy=key not in written) for key in differ)
            raise EagerError(f"{out} holds a run with a different configuration: {shown}; use another out_dir")
        known = previous.get("methods", [])
    else:
        if any(out.glob("*.jsonl")):
            raise EagerError(f"{out} holds records but no {CONFIG_FILE}; use another out_dir")
        known = []
    union = [m for m in EVAL_METHODS if m in known or m in methods]
    if path.exists() and union == known:
        return None
    return json.dumps({**stored, "methods": union}, indent=2, ensure_ascii=False) + "\n"


def write_config(out: Path, text: str | None) -> None:
    if text is not None:
        _write_atomic(out / CONFIG_FILE, text)


class Session:
    """One ``eager eval`` session's clock: when it started (UTC) and how long it ran.

    A run resumed after an interruption has several sessions; the report adds
    up their elapsed times (DIR/sessions.jsonl, one line per session that
    generated something).
    """

    def __init__(self) -> None:
        self.started_utc = utc_now()
        self._started = time.monotonic()

    @contextmanager
    def recorded(self, out: Path):
        """Append this session's line to DIR/sessions.jsonl when the block ends, however it ends."""
        interrupted = True
        try:
            yield self
            interrupted = False
        finally:
            line = {
                "started_utc": self.started_utc,
                "finished_utc": utc_now(),
                "elapsed_s": round(time.monotonic() - self._started, 3),
                "interrupted": interrupted,
            }
            _append_line(out / SESSIONS_FILE, line)


def _append_line(path: Path, entry: dict[str, Any]) -> None:
    _mend_tail(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _refuse_symlink(path: Path) -> None:
    if path.is_symlink():
        raise EagerError(f"refusing to write through a symbolic link: {path}")


def _write_atomic(path: Path, text: str) -> None:
    _refuse_symlink(path)
    tmp = path.with_name(path.name + ".tmp")
    _refuse_symlink(tmp)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _mend_tail(path: Path) -> None:
    """A crash can leave the last line without its newline: keep it if it is a complete
    record (only the newline is missing), cut it if it is half-written; either way
    appends start on a fresh line."""
    if not path.exists():
        return
    _refuse_symlink(path)
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        if _complete_record(data[keep:]):
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        else:
            log.warning("%s: dropping a truncated last line (%d bytes) left by an interrupted run", path, len(data) - keep)
            f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


def _complete_record(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw.decode("utf-8")), dict)
    except (ValueError, UnicodeDecodeError):
        return False


class RunLock:
    """An exclusive lock on a run directory, held while a run writes to it.

    ``flock`` on ``DIR/.lock``: a second run into the same directory is refused
    at once; the kernel drops the lock when its holder dies (even by
    ``kill -9``), so a stale lock file never blocks the next run.
    """

    def __init__(self, out: Path) -> None:
        import fcntl

        path = out / ".lock"
        _refuse_symlink(path)
        self._file = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise EagerError(f"{out} is in use by another eager run ({holder}); wait for it or use another out_dir") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class RecordLog:
    """An append-only JSON-lines file: one fsynced line per finished unit of work.

    Subclasses index what they need from the lines already there (``_index``),
    at open and after every append.
    """

    def __init__(self, path: Path) -> None:
        _mend_tail(path)
        self.path = path
        self._file = None
        for entry in read_jsonl(path, self.required) if path.exists() else []:
            self._index(entry)

    required = RECORD_FIELDS

    def _index(self, entry: dict[str, Any]) -> None:
        raise NotImplementedError

    def append(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            self._file = os.fdopen(fd, "a", encoding="utf-8")
        try:
            self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as error:  # a full disk: the line is not done; a rerun generates it again
            raise EagerError(f"cannot write {self.path}: {error.strerror or error}; free space and run the same command again") from None
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

    required = {**RECORD_FIELDS, "attempt": (int,)}

    def __init__(self, path: Path) -> None:
        self.trees: dict[tuple[str, int], list[dict[str, Any]]] = {}
        super().__init__(path)

    def _index(self, entry: dict[str, Any]) -> None:
        trees = self.trees.setdefault((str(entry["id"]), int(entry["M"])), [])
        if entry["attempt"] == len(trees):  # anything else repeats a tree already kept
            trees.append(entry)

    def of(self, problem: Problem, M: int) -> list[dict[str, Any]]:
        return self.trees.get((problem.id, M), [])

