"""Running untrusted programs: never in this process, under bubblewrap, within limits.

:func:`run_program` runs one Python program (a model's code and a problem's
tests) and says whether it passed, and if not, why (:class:`Outcome`). The
program runs in a fresh process of the interpreter that runs eager
(``python -I``), started by a small launcher that first sets its limits
(:class:`Limits`) as hard rlimits: CPU time, address space, processes, file
size (which also bounds what it may print) and no core files. A wall clock
kills the whole process group.

:class:`Bubblewrap` (the default) puts that process in a sandbox made by
``bwrap``: new user, PID, network, IPC and UTS namespaces (no network at all),
no capabilities, no further user namespaces, the system directories (and the
interpreter's own) mounted read-only, a private size-limited tmpfs as ``/tmp``
and ``HOME``, an empty environment, a new session, and it dies with its parent.
RLIMIT_NPROC counts processes per user; in the sandbox's own user namespace it
counts only the sandbox's, so a fork bomb ends at the limit whatever the host
runs. The kernel never applies it to root's processes (in any namespace), so
when eager runs as root, bwrap starts as "nobody" (and runs the system's
``python3`` if "nobody" cannot reach eager's interpreter). :class:`Unsafe` (``--unsafe-exec``) only sets the limits and runs the
program in a private temporary directory: the program can read and write
anything the user can.

A program passes when it exits with status 0 AND the launcher, after the
program returned normally, printed a random token as the last line of its
output: a ``sys.exit(0)`` or ``os._exit(0)`` before the tests is a failure.
"""

from __future__ import annotations

import functools
import math
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from eager.errors import EagerError

# Why a program failed (Outcome.reason).
ASSERTION = "assertion"  # a test's assert failed
EXCEPTION = "exception"  # any other uncaught exception
SYNTAX = "syntax"  # the program does not compile
TIMEOUT = "timeout"  # the wall clock or the CPU-time limit
MEMORY = "memory"  # MemoryError under the address-space limit
OUTPUT = "output"  # printed more than Limits.output_bytes
EXITED = "exit"  # left before the tests finished (sys.exit, os._exit) without failing one
KILLED = "killed"  # ended by a signal (a crash, the OOM killer)
NO_CODE = "no_code"  # nothing to run (set by the caller)
REASONS = (ASSERTION, EXCEPTION, SYNTAX, TIMEOUT, MEMORY, OUTPUT, EXITED, KILLED, NO_CODE)

# The launcher's exit statuses for what it caught (a program may fake one, never a pass).
_STATUS = {71: SYNTAX, 72: ASSERTION, 73: MEMORY, 74: EXCEPTION, 75: EXITED}

# Runs inside the sandbox: argv = cpu seconds, address-space bytes, processes, file bytes;
# stdin = the token line, then the program.
LAUNCHER = r"""
import os, resource, sys, traceback
token = sys.stdin.readline().strip()
source = sys.stdin.read()
for name, value in zip(("CPU", "AS", "NPROC", "FSIZE", "CORE"), [*map(int, sys.argv[1:5]), 0]):
    resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value + (name == "CPU")))
def leave(status):
    kind, error, frames = sys.exc_info()
    traceback.print_exception(kind, error, frames.tb_next, limit=-4)
    sys.stderr.flush()
    os._exit(status)
try:
    code = compile(source, "program.py", "exec")
except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
    leave(71)
try:
    exec(code, {"__name__": "__main__"})
except AssertionError:
    leave(72)
except MemoryError:
    leave(73)
except SystemExit:
    leave(75)
except BaseException:
    leave(74)
try:
    sys.stdout.flush()
except BaseException:
    pass
os.write(1, ("\n" + token + "\n").encode())
os._exit(0)
"""


@dataclass(frozen=True)
class Limits:
    """What one program may use.

    Attributes:
        wall_s: wall-clock seconds before the whole process group is killed.
        cpu_s: CPU seconds (RLIMIT_CPU; whole seconds, at least 1).
        memory_mb: address space in MiB (RLIMIT_AS); beyond it allocations fail.
        processes: processes and threads of the sandbox's user (RLIMIT_NPROC).
        output_bytes: largest file it may write, stdout and stderr included (RLIMIT_FSIZE).
        tmp_mb: size of the sandbox's private /tmp.
        stderr_lines: how many last lines of stderr an outcome keeps.
    """

    wall_s: float = 10.0
    cpu_s: float = 10.0
    memory_mb: int = 1024
    processes: int = 64
    output_bytes: int = 1 << 20
    tmp_mb: int = 64
    stderr_lines: int = 8

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "memory_mb", "processes", "output_bytes", "tmp_mb"):
            if not getattr(self, name) > 0:
                raise EagerError(f"sandbox limit {name} must be > 0, got {getattr(self, name)}")

    def rlimits(self, processes: int) -> list[str]:
        """The launcher's arguments."""
        return [str(max(1, math.ceil(self.cpu_s))), str(self.memory_mb << 20), str(processes), str(self.output_bytes)]


@dataclass(frozen=True)
class Outcome:
    """What running one program came to.

    Attributes:
        passed: it ran to the end and exited 0.
        reason: None when passed, else one of :data:`REASONS`.
        stderr: the last lines of its standard error (the traceback of a failure).
        wall_s: how long it ran.
    """

    passed: bool
    reason: str | None
    stderr: str = ""
    wall_s: float = 0.0


def interpreter() -> tuple[str, str]:
    """The real Python binary that runs eager, and the installation folder it needs."""
    return str(Path(sys.executable).resolve()), str(Path(sys.base_prefix).resolve())


@dataclass(frozen=True)
class Bubblewrap:
    """The sandbox: a program's command wrapped in ``bwrap`` (see the module docstring).

    Run by root, bwrap starts as the user "nobody": the kernel exempts root's own
    processes from RLIMIT_NPROC, even in another user namespace (:func:`sandbox_python`
    says which interpreter "nobody" can run).
    """

    binary: str = "bwrap"
    name = "bubblewrap"

    def command(self, inner: list[str], limits: Limits) -> list[str]:
        args = [self.binary, "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        args += ["--die-with-parent", "--new-session", "--clearenv", *_system_mounts()]
        args += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp"]
        args += ["--chdir", "/tmp", "--setenv", "HOME", "/tmp", "--setenv", "PATH", "/usr/bin:/bin"]
        return [*args, "--", *inner]

    def processes(self, limits: Limits) -> int:
        return limits.processes  # the sandbox's user namespace counts only its own processes

    def python(self) -> str:
        return sandbox_python()[0]

    @contextmanager
    def start(self, inner: list[str], limits: Limits, streams: dict[str, Any]) -> Iterator[subprocess.Popen]:
        yield subprocess.Popen(
            self.command(inner, limits), **streams, cwd="/", env={"PATH": "/usr/bin:/bin"}, start_new_session=True, **_not_root()
        )


def _system_mounts() -> list[str]:
    """/usr and the top-level links or folders into it, read-only, and the interpreter's folder."""
    mounts = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        path = Path(top)
        if path.is_symlink():
            mounts += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            mounts += ["--ro-bind", top, top]
    prefix = sandbox_python()[1]
    if not prefix.startswith("/usr/") and prefix != "/usr":
        mounts += ["--ro-bind", prefix, prefix]
    return mounts


def sandbox_python() -> tuple[str, str]:
    """The interpreter the sandbox runs and its folder: eager's own, unless the sandbox runs as
    "nobody" (this process is root) and cannot reach it (as under /root); then the system's python3."""
    own, prefix = interpreter()
    if os.geteuid() != 0 or (_reachable_by_all(Path(own)) and _reachable_by_all(Path(prefix))):
        return own, prefix
    return "/usr/bin/python3", "/usr"


def _reachable_by_all(path: Path) -> bool:
    """Every folder above ``path`` can be entered by any user, and ``path`` read."""
    try:
        if not path.stat().st_mode & stat.S_IROTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)
    except OSError:
        return False


def _not_root() -> dict[str, Any]:
    """Popen's arguments that start a process as "nobody" when this one is root (else none)."""
    if os.geteuid() != 0:
        return {}
    try:
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
    except KeyError:
        uid = gid = 65534
    return {"user": uid, "group": gid, "extra_groups": []}


@dataclass(frozen=True)
class Unsafe:
    """No sandbox: the limits, a separate process group and a private working directory only."""

    name = "unsafe (rlimits only)"

    def python(self) -> str:
        return interpreter()[0]

    def processes(self, limits: Limits) -> int:
        # RLIMIT_NPROC counts all of the user's processes here (and binds no process of root).
        return _processes_of_this_user() + limits.processes

    @contextmanager
    def start(self, inner: list[str], limits: Limits, streams: dict[str, Any]) -> Iterator[subprocess.Popen]:
        with tempfile.TemporaryDirectory(prefix="eager-exec-") as home:
            env = {"PATH": "/usr/bin:/bin", "HOME": home}
            yield subprocess.Popen(inner, **streams, cwd=home, env=env, start_new_session=True)


def _processes_of_this_user() -> int:
    uid = os.getuid()
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                count += len(list((entry / "task").iterdir()))
        except OSError:
            continue  # a process that just ended
    return count


Isolation = Bubblewrap | Unsafe


@functools.cache
def bubblewrap_problem(binary: str = "bwrap") -> str | None:
    """Why the sandbox cannot run here (None: it can): bwrap missing, or unable to make its sandbox."""
    path = shutil.which(binary)
    if path is None:
        return f"{binary} (bubblewrap) is not installed"
    try:
        probe = run_program("pass\n", Limits(wall_s=30.0), Bubblewrap(path))
    except OSError as error:
        return f"{binary} failed to start ({error})"
    if not probe.passed:
        detail = probe.stderr.strip().splitlines()
        return f"{binary} cannot create its sandbox here ({detail[-1] if detail else probe.reason})"
    return None


def isolation(unsafe: bool = False, binary: str = "bwrap") -> Isolation:
    """The sandbox, or :class:`Unsafe` when asked; refuses when the sandbox cannot run."""
    if unsafe:
        return Unsafe()
    problem = bubblewrap_problem(binary)
    if problem is not None:
        raise EagerError(
            f"code is graded by running it in a sandbox, but {problem}: run scripts/setup.sh --sandbox "
            "(apt-get install bubblewrap), or pass --unsafe-exec to run model code without one"
        )
    return Bubblewrap(shutil.which(binary) or binary)


def run_program(source: str, limits: Limits = Limits(), how: Isolation | None = None) -> Outcome:
    """Run ``source`` in a separate process under ``how`` (default: the sandbox) and ``limits``."""
    how = how if how is not None else isolation()
    token = secrets.token_hex(16)
    inner = [how.python(), "-I", "-c", LAUNCHER, *limits.rlimits(how.processes(limits))]
    with tempfile.TemporaryDirectory(prefix="eager-run-") as files:
        stdin, stdout, stderr = (Path(files) / name for name in ("stdin", "stdout", "stderr"))
        stdin.write_text(token + "\n" + source, encoding="utf-8")
        started = time.monotonic()
        with open(stdin, "rb") as i, open(stdout, "wb") as o, open(stderr, "wb") as e:
            with how.start(inner, limits, {"stdin": i, "stdout": o, "stderr": e}) as process:
                status = _wait(process, limits.wall_s)
        return _outcome(status, time.monotonic() - started, token, stdout, stderr, limits)


def _wait(process: subprocess.Popen, wall_s: float) -> int | None:
    """The exit status of ``process`` (None: killed at the wall limit); its whole group is killed either way."""
    exited = _exits_within(process.pid, wall_s)
    _kill_group(process.pid)  # what it left in its session; the leader is not reaped yet, so its group id is its own
    process.wait()
    return process.returncode if exited else None


def _exits_within(pid: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``pid`` to exit, without reaping it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            return True
        time.sleep(0.01)
    return False


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _outcome(status: int | None, wall_s: float, token: str, stdout: Path, stderr: Path, limits: Limits) -> Outcome:
    tail = _tail_lines(stderr, limits.stderr_lines)
    if status is None:
        return Outcome(False, TIMEOUT, tail, wall_s)
    if max(stdout.stat().st_size, stderr.stat().st_size) >= limits.output_bytes:
        return Outcome(False, OUTPUT, tail, wall_s)
    if status == 0 and _last_line(stdout) == token:
        return Outcome(True, None, tail, wall_s)
    return Outcome(False, _reason(status, tail), tail, wall_s)


def _reason(status: int, stderr_tail: str) -> str:
    """Why a program that did not pass failed, from its exit status (bwrap reports a
    signal-killed program as 128 + the signal; without bwrap, the signal is negative)."""
    signal_number = -status if status < 0 else status - 128 if 128 < status < 160 else None
    if signal_number == signal.SIGXCPU:
        return TIMEOUT
    if signal_number is not None:
        return KILLED
    reason = _STATUS.get(status, EXITED if status == 0 else EXCEPTION)
    if reason == EXCEPTION and "MemoryError" in stderr_tail:
        return MEMORY
    return reason


def _read_tail(path: Path, size: int = 4096) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read().decode("utf-8", "replace")


def _tail_lines(path: Path, lines: int) -> str:
    return "\n".join(_read_tail(path).rstrip().splitlines()[-lines:])


def _last_line(path: Path) -> str | None:
    text = _read_tail(path, 256).rstrip("\n").splitlines()
    return text[-1] if text else None
