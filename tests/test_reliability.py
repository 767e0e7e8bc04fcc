"""Run directories and user files under abuse: one clear line, never a traceback, nothing lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from eager.backends.mock import MockBackend
from eager.cli import main
from eager.errors import EagerError
from eager.eval import EvalConfig, run_eval
from eager.eval.records import RunLock
from eager.eval.report import write_report


def contains_q(problem, text: str) -> bool:
    return "q" in text


def config(tmp_path: Path, dataset: Path, **overrides) -> EvalConfig:
    settings = dict(out_dir=tmp_path / "out", dataset=str(dataset), model="mock", M=(4,), theta=2.98, dynamic_theta=False,
                    max_tokens=30, template="{question}", methods="parallel,eager-init")
    settings.update(overrides)
    return EvalConfig.of(**settings)


def evaluate(cfg: EvalConfig) -> dict:
    return run_eval(cfg, backend=MockBackend(), verifier=contains_q)


def test_a_second_run_into_the_same_directory_is_refused_while_the_first_holds_it(tmp_path, dataset):
    cfg = config(tmp_path, dataset)
    out = Path(cfg.out_dir)
    out.mkdir()
    lock = RunLock(out)
    try:
        with pytest.raises(EagerError, match="in use by another eager run .pid"):
            evaluate(cfg)
    finally:
        lock.close()
    assert not (out / "parallel.jsonl").exists()
    evaluate(cfg)  # the lock is gone with its holder: the run goes on
    assert len((out / "parallel.jsonl").read_text().splitlines()) == 8


def test_a_stale_lock_file_left_by_a_killed_run_does_not_block(tmp_path, dataset):
    cfg = config(tmp_path, dataset)
    out = Path(cfg.out_dir)
    out.mkdir()
    (out / ".lock").write_text("pid 999999\n")  # its holder died: the kernel dropped the lock
    evaluate(cfg)
    assert (out / "summary.json").exists()


def test_a_run_that_fails_to_start_writes_no_configuration(tmp_path, dataset):
    cfg = config(tmp_path, dataset, model="no-such-model")
    with pytest.raises(EagerError, match="no-such-model"):
        run_eval(cfg)
    assert not (Path(cfg.out_dir) / "config.json").exists()
    evaluate(config(tmp_path, dataset))  # the corrected command is not "a different configuration"


def test_a_bad_template_fails_before_anything_is_written(tmp_path, dataset):
    cfg = config(tmp_path, dataset, template="{question} {oops}")
    with pytest.raises(EagerError):
        evaluate(cfg)
    assert not (Path(cfg.out_dir) / "config.json").exists()


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path, dataset):
    cfg = config(tmp_path, dataset, methods="parallel")
    evaluate(cfg)
    path = Path(cfg.out_dir) / "parallel.jsonl"
    before = path.read_text()
    path.write_text(before.rstrip("\n"))  # the newline of the last write never landed
    evaluate(cfg)
    assert path.read_text() == before  # kept as it was, not regenerated differently


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda r: r.pop("id"), "'id' must be str or int"),
        (lambda r: r.update(M="four"), "'M' must be int"),
    ],
)
def test_a_damaged_middle_record_is_reported_as_file_and_line(tmp_path, dataset, damage, words):
    cfg = config(tmp_path, dataset, methods="parallel")
    evaluate(cfg)
    path = Path(cfg.out_dir) / "parallel.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    damage(rows[2])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for attempt in (lambda: evaluate(cfg), lambda: write_report(cfg.out_dir)):
        with pytest.raises(EagerError, match=f"parallel.jsonl:3: .*{words}"):
            attempt()


def test_invalid_utf8_in_a_record_is_reported_as_file_and_line(tmp_path, dataset):
    cfg = config(tmp_path, dataset, methods="parallel")
    evaluate(cfg)
    path = Path(cfg.out_dir) / "parallel.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[1] = b'{"id": "\xff"}'
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(EagerError, match="parallel.jsonl:2: not a valid JSON record"):
        write_report(cfg.out_dir)


def test_no_write_follows_a_symbolic_link(tmp_path, dataset):
    cfg = config(tmp_path, dataset, methods="parallel")
    evaluate(cfg)
    out = Path(cfg.out_dir)
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("")
    (out / "parallel.jsonl").unlink()
    os.symlink(target, out / "parallel.jsonl")
    with pytest.raises(EagerError, match="symbolic link"):
        evaluate(cfg)
    assert target.read_text() == ""


def test_report_refuses_method_names_it_does_not_know(tmp_path, dataset):
    cfg = config(tmp_path, dataset, methods="parallel")
    evaluate(cfg)
    path = Path(cfg.out_dir) / "config.json"
    stored = json.loads(path.read_text())
    stored["methods"] = ["../../etc/passwd"]
    path.write_text(json.dumps(stored))
    with pytest.raises(EagerError, match="unknown method '../../etc/passwd'"):
        write_report(cfg.out_dir)


@pytest.mark.parametrize("flag", ["--prompt-file", "--dataset", "--ids"])
def test_invalid_utf8_in_user_files_is_one_line_naming_file_and_line(tmp_path, capsys, flag):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b'{"id": "p0", "question": "q", "answer": "1"}\n\xff\n')
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "p0", "question": "q", "answer": "1"}\n')
    argv = {
        "--prompt-file": ["generate", "--model", "smollm2-135m", "--prompt-file", str(bad)],
        "--dataset": ["eval", "--model", "smollm2-135m", "--dataset", str(bad), "--out", str(tmp_path / "o")],
        "--ids": ["eval", "--model", "smollm2-135m", "--dataset", str(good), "--ids", str(bad), "--out", str(tmp_path / "o")],
    }[flag]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("eager: error: ") and f"{bad}:2: not valid UTF-8" in err and "\n" not in err


def test_a_nul_byte_in_a_prompt_is_refused_not_silently_cut(capsys):
    assert main(["generate", "--model", "smollm2-135m", "--prompt", "hi\x00there"]) == 2
    assert "NUL character" in capsys.readouterr().err


def test_a_tiny_context_is_an_error_or_works_never_a_native_abort(capsys):
    assert main(["generate", "--model", "smollm2-135m", "--prompt", "hi", "--ctx", "32", "--max-tokens", "8", "-M", "2"]) == 0
    assert main(["generate", "--model", "smollm2-135m", "--prompt", "hi", "--ctx", "40", "--max-tokens", "8", "-M", "50"]) == 2
    assert "exceeds the 40 sequences" in capsys.readouterr().err


def test_a_ray_address_with_nothing_there_fails_in_seconds(tmp_path, capsys):
    import socket
    import time

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "p0", "question": "q", "answer": "1"}\n')
    started = time.monotonic()
    assert main(["eval", "--model", "smollm2-135m", "--dataset", str(data), "--out", str(tmp_path / "o"), "--ray", f"127.0.0.1:{port}"]) == 2
    assert time.monotonic() - started < 30
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["eval", "--model", "smollm2-135m", "--dataset", str(data), "--out", str(tmp_path / "o"), "--ray", "nonsense"]) == 2
    assert "bad Ray address 'nonsense'" in capsys.readouterr().err
