"""Model code runs in the sandbox: hostile completions fail for the right reason, the host is untouched.

Each hostile completion is graded on a real HumanEval problem by the code
verifier, as an eval grades it; limits are short so each run ends in seconds.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from eager.errors import EagerError
from eager.eval.code import CodeVerifier, program
from eager.eval.datasets import load_problems
from eager.eval.sandbox import (
    ASSERTION, EXCEPTION, EXITED, MEMORY, NO_CODE, OUTPUT, SYNTAX, TIMEOUT, Bubblewrap, Limits, Unsafe,
    bubblewrap_problem, isolation, run_program,
)

SANDBOX = bubblewrap_problem() is None
sandbox = [pytest.mark.sandbox, pytest.mark.skipif(not SANDBOX, reason=f"no sandbox: {bubblewrap_problem()}")]

LIMITS = Limits(wall_s=3.0, cpu_s=2.0, memory_mb=512, processes=32, output_bytes=1 << 16)
WRONG = "    return False\n"  # has_close_elements answered wrongly: the tests fail if nothing else does


@pytest.fixture(scope="module")
def problem():
    return load_problems("humaneval", limit=1)[0]  # HumanEval/0, has_close_elements


@pytest.fixture(scope="module")
def verifier():
    if not SANDBOX:
        pytest.skip(f"no sandbox: {bubblewrap_problem()}")
    verify = CodeVerifier(LIMITS, workers=2)
    yield verify
    verify.close()


def block(code: str) -> str:
    return f"Here it is:\n```python\n{code}\n```\n"


def hostile(setup: str) -> str:
    """A completion that does ``setup`` at module level, then defines a wrong function."""
    return block(f"import os, sys, shutil, socket\n{setup}\n\ndef has_close_elements(numbers, threshold):\n{WRONG}")


def launcher_processes() -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"RLIMIT_" in (entry / "cmdline").read_bytes():
                count += 1
        except OSError:
            continue
    return count


# -- the verdicts that are not hostile -----------------------------------------------------


@pytest.mark.sandbox
def test_the_reference_solution_passes_and_a_wrong_one_fails_on_an_assertion(verifier, problem):
    assert verifier.details(problem, problem.gold) == {"passed": True, "reason": None, "stderr": ""}
    wrong = verifier.details(problem, block(f"def has_close_elements(numbers, threshold):\n{WRONG}"))
    assert (wrong["passed"], wrong["reason"]) == (False, ASSERTION)
    assert wrong["stderr"].splitlines()[-1] == "AssertionError" and "program.py" in wrong["stderr"]


@pytest.mark.sandbox
def test_code_that_does_not_compile_is_a_syntax_failure_and_no_code_is_not_run(verifier, problem):
    assert verifier.details(problem, block("def has_close_elements(numbers, threshold:\n    pass"))["reason"] == SYNTAX
    assert verifier.details(problem, "   \n")["reason"] == NO_CODE


# -- hostile completions -------------------------------------------------------------------


@pytest.mark.sandbox
def test_rm_rf_home_deletes_nothing_of_the_host(verifier, problem, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    canary = home / "canary.txt"
    canary.write_text("still here")
    monkeypatch.setenv("HOME", str(home))
    setup = f'os.system("rm -rf ~ {home}")\nshutil.rmtree({str(home)!r})'
    outcome = verifier.outcome(problem, hostile(setup))
    assert (outcome.passed, outcome.reason) == (False, EXCEPTION)
    assert "FileNotFoundError" in outcome.stderr  # the host's home is not even visible
    assert canary.read_text() == "still here"


@pytest.mark.sandbox
def test_writing_outside_the_private_tmp_changes_no_host_file(verifier, problem, tmp_path):
    target = tmp_path / "written.txt"
    setup = f"os.makedirs({str(tmp_path)!r}, exist_ok=True)\nopen({str(target)!r}, 'w').write('x')"  # lands in the sandbox's tmpfs
    assert verifier.details(problem, hostile(setup))["reason"] == ASSERTION
    assert not target.exists()
    system = verifier.outcome(problem, hostile("open('/usr/eager-was-here', 'w').write('x')"))
    assert system.reason == EXCEPTION and "Read-only file system" in system.stderr
    assert not Path("/usr/eager-was-here").exists()


@pytest.mark.sandbox
def test_a_socket_reaches_no_server_of_the_host(verifier, problem):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        setup = f"socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hello')"
        outcome = verifier.outcome(problem, hostile(setup))
        assert (outcome.passed, outcome.reason) == (False, EXCEPTION)
        assert "ConnectionRefusedError" in outcome.stderr or "unreachable" in outcome.stderr
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected


@pytest.mark.sandbox
def test_a_fork_bomb_ends_at_the_wall_clock_and_leaves_no_process(verifier, problem):
    before = launcher_processes()
    started = time.monotonic()
    bomb = "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    outcome = verifier.outcome(problem, hostile(bomb))
    assert (outcome.passed, outcome.reason) == (False, TIMEOUT)
    assert time.monotonic() - started < LIMITS.wall_s + 5
    time.sleep(0.5)
    assert launcher_processes() <= before


@pytest.mark.sandbox
def test_the_process_limit_holds_in_the_sandbox_whatever_the_host_runs():
    # Forks children that sleep and counts how many the kernel allowed; passes only within the limit.
    count = "import os, time\nmade = 0\nfor _ in range(200):\n    try:\n        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n        made += 1\n    except OSError:\n        break\n"
    limited = run_program(count + f"assert made < {LIMITS.processes}, made\n", LIMITS, Bubblewrap())
    assert limited.passed, limited.stderr


@pytest.mark.sandbox
def test_an_infinite_loop_is_a_timeout(verifier, problem):
    loop = block("def has_close_elements(numbers, threshold):\n    while True:\n        pass")
    assert verifier.details(problem, loop)["reason"] == TIMEOUT


@pytest.mark.sandbox
def test_a_memory_hog_is_a_memory_failure(verifier, problem):
    assert verifier.details(problem, hostile("hog = bytearray(8 * 1024 ** 3)"))["reason"] == MEMORY
    assert verifier.details(problem, hostile("hog = [0] * (2 * 10 ** 9)"))["reason"] == MEMORY


@pytest.mark.sandbox
@pytest.mark.parametrize("leave", ["sys.exit(0)", "os._exit(0)", "raise SystemExit"])
def test_leaving_before_the_tests_is_not_a_pass(verifier, problem, leave):
    right = f"import sys, os\n{problem.question}{problem.gold}\n{leave}\n"  # the right function, then gone
    outcome = verifier.outcome(problem, block(right))
    assert (outcome.passed, outcome.reason) == (False, EXITED)


@pytest.mark.sandbox
@pytest.mark.parametrize("flood", ["print('x' * 50_000_000)", "while True:\n    print('y' * 1000)"])
def test_printing_megabytes_is_an_output_failure(verifier, problem, flood):
    outcome = verifier.outcome(problem, hostile(flood))
    assert (outcome.passed, outcome.reason) == (False, OUTPUT)
    assert len(outcome.stderr) < 2000


@pytest.mark.sandbox
def test_grading_goes_on_after_hostile_programs_run_side_by_side(problem, tmp_path):
    verify = CodeVerifier(LIMITS, workers=4)
    try:
        bad = [hostile("while True:\n    pass"), hostile("hog = bytearray(8 * 1024 ** 3)"), hostile("sys.exit(0)")]
        started = time.monotonic()
        verify.prefetch(problem, bad)  # all at once, in parallel processes
        assert [verify(problem, text) for text in bad] == [False, False, False]
        assert time.monotonic() - started < 2 * LIMITS.wall_s  # side by side, not one after another
        assert verify(problem, problem.gold) is True
    finally:
        verify.close()


# -- without the sandbox -------------------------------------------------------------------


def test_without_bwrap_code_is_refused_in_one_line_that_names_unsafe_exec():
    with pytest.raises(EagerError) as refused:
        isolation(binary="no-such-bwrap")
    assert "--unsafe-exec" in str(refused.value) and "\n" not in str(refused.value)
    assert "not installed" in bubblewrap_problem("no-such-bwrap")


def test_unsafe_exec_still_runs_in_a_separate_process_with_limits_and_a_private_directory(problem):
    how = isolation(unsafe=True)
    assert isinstance(how, Unsafe)
    passed = run_program(program(problem, problem.gold), LIMITS, how)
    assert passed.passed
    where = run_program(f"import os\nassert os.getpid() != {os.getpid()}\nassert os.getcwd().startswith('/tmp/eager-exec-'), os.getcwd()\n", LIMITS, how)
    assert where.passed, where.stderr
    assert run_program("while True:\n    pass\n", Limits(wall_s=1.5, cpu_s=1.0), how).reason == TIMEOUT
    assert run_program("import sys\nsys.exit(0)\n", LIMITS, how).reason == EXITED
