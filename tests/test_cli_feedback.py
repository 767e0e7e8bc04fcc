"""What the CLI says while it runs (-v/-q, a live line on a terminal, log lines elsewhere)
and what `eager generate` prints (one JSON shape with a schema, JSON Lines, answers and the vote).

The rules run on the mock backend standing in for llama.cpp (the model's name, its
registry entry and the loading line stay real); one test runs SmolLM2 for real.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from schema_check import errors

from eager.backends.mock import MockBackend
from eager.cli import main
from eager.cli.feedback import Status, duration, eta_s
from eager.cli.generate_output import TAIL_CHARS as TAIL
from eager.cli.generate_output import render_tree, schema, settings, shown_text, vote_line
from eager.core.results import GenerationResult, SequenceResult
from eager.core.tree import ForkEvent
from eager.models import MODELS

PROMPT = ["generate", "--model", "smollm2-135m", "-M", "4", "--max-tokens", "24"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def mock_llama(monkeypatch):
    """llama.cpp replaced by the mock backend: `load_backend` still resolves the model and logs its line."""
    monkeypatch.setattr("eager.backends.llama.LlamaBackend", lambda *args, **kwargs: MockBackend(max_sequences=kwargs.get("max_sequences", 64)))
    monkeypatch.setenv("EAGER_PROGRESS_INTERVAL", "0")  # a log line for every step


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the JSON shape ----------------------------------------------------------------------


@pytest.mark.parametrize("prompts", [["What is 2+2?"], ["What is 2+2?", "Name a colour.", "Count to three."]])
def test_json_is_one_shape_for_one_prompt_and_for_several_and_validates(mock_llama, capsys, prompts):
    argv = PROMPT + [a for p in prompts for a in ("--prompt", p)] + ["--json"]
    code, out, _ = run_cli(argv, capsys)
    payload = json.loads(out)
    assert code == 0 and errors(payload, schema()) == []
    assert [r["index"] for r in payload["results"]] == list(range(len(prompts)))
    assert [r["prompt"] for r in payload["results"]] == prompts
    settings = payload["settings"]
    assert settings["model"] == "smollm2-135m" and settings["model_sha256"] == MODELS["smollm2-135m"].sha256
    assert (settings["M"], settings["max_tokens"], settings["theta_source"]) == (4, 24, "shipped")
    assert set(settings["sampling"]) == {"temperature", "top_p", "top_k"} and settings["versions"]["eager"]
    for result in payload["results"]:
        assert [s["index"] for s in result["sequences"]] == list(range(len(result["sequences"])))
        assert all(s["parent"] is None or s["parent"] < s["index"] for s in result["sequences"])


def test_jsonl_is_one_self_contained_line_per_prompt(mock_llama, capsys):
    code, out, _ = run_cli(PROMPT + ["--prompt", "a", "--prompt", "b", "--jsonl"], capsys)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [line["result"]["prompt"] for line in lines] == ["a", "b"]
    assert all(errors(line, schema()) == [] for line in lines)
    assert lines[0]["settings"] == lines[1]["settings"]


def test_parallel_settings_carry_no_theta(mock_llama, capsys):
    _, out, _ = run_cli(PROMPT + ["--prompt", "a", "--method", "parallel", "--json"], capsys)
    payload = json.loads(out)
    assert errors(payload, schema()) == [] and payload["settings"]["theta"] is None
    assert len(payload["results"][0]["sequences"]) == 4


def test_settings_of_a_served_model_have_no_sha256_and_no_credentials():
    from eager.core.config import BranchingConfig, EngineConfig, SamplingConfig

    got = settings(model="openai:http://alice:hunter2@127.0.0.1:9/v1#m", method="parallel", theta=None,
                   branching=BranchingConfig(), sampling=SamplingConfig(), engine=EngineConfig(), chat=True)
    assert got["model_sha256"] is None and "hunter2" not in json.dumps(got) and got["model"].endswith("127.0.0.1:9/v1#m")
    assert errors({"settings": got, "results": [{"index": 0}]}, schema()) != []  # the settings part is valid, the result not
    assert not [e for e in errors({"settings": got, "results": [{"index": 0}]}, schema()) if e.startswith("$.settings")]


def test_the_schema_rejects_the_old_bare_object_and_a_missing_setting():
    bad = {"prompt": "a", "sequences": []}
    assert errors(bad, schema())
    good_shape = {"settings": {"model": "m"}, "results": []}
    assert any("missing 'seed'" in e for e in errors(good_shape, schema()))
    assert any("fewer than 1" in e for e in errors(good_shape, schema()))


def test_jsonschema_agrees_where_it_is_installed(mock_llama, capsys):
    jsonschema = pytest.importorskip("jsonschema")
    _, out, _ = run_cli(PROMPT + ["--prompt", "a", "--prompt", "b", "--json"], capsys)
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.validate(json.loads(out), schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"settings": {}, "results": [], "result": {}}, schema())


def test_prompt_file_dash_reads_prompts_from_standard_input(mock_llama, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("first question\n\nsecond question\n".encode())))
    _, out, _ = run_cli(PROMPT + ["--prompt-file", "-", "--jsonl"], capsys)
    assert [json.loads(line)["result"]["prompt"] for line in out.splitlines()] == ["first question", "second question"]


# -- feedback: log lines, a terminal line, -q, -v -----------------------------------------------


def test_without_a_terminal_progress_goes_out_as_log_lines(mock_llama, capsys):
    code, _, err = run_cli(PROMPT + ["--prompt", "a", "--prompt", "b"], capsys)
    lines = err.splitlines()
    assert code == 0 and "\r" not in err
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO: loading smollm2-135m \(\d+ MB, \d+ threads?, ctx 16384\)", lines[0])
    progress = [line for line in lines if "generating:" in line]
    assert len(progress) >= 2 and all(" INFO: " in line for line in progress)
    assert "2/2 prompts done" in progress[-1] and "tok/s" in progress[-1] and "branches live" in progress[0]


def test_on_a_terminal_progress_is_one_line_redrawn_and_left_on_screen(mock_llama, capsys, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(PROMPT + ["--prompt", "a"]) == 0
    err = terminal.getvalue()
    assert err.startswith("eager: loading smollm2-135m (")  # a log record on a terminal: no time stamp
    assert err.count("\r\x1b[2K") >= 1 and err.endswith("\n")
    assert "1/1 prompts done" in err.rsplit("\r\x1b[2K", 1)[-1]


def test_quiet_silences_progress_and_info_lines(mock_llama, capsys):
    code, out, err = run_cli(["-q"] + PROMPT + ["--prompt", "a"], capsys)
    assert code == 0 and err == "" and "vote:" in out
    code, _, err = run_cli(PROMPT + ["--prompt", "a", "-q"], capsys)  # after the command's name as well
    assert code == 0 and err == ""


def test_verbose_adds_debug_lines_with_the_logger_name(mock_llama, capsys):
    _, _, err = run_cli(PROMPT + ["--prompt", "a", "-v"], capsys)
    assert re.search(r"DEBUG eager\.cli\.generate: 1 prompts, method eager-init, theta", err)
    _, _, plain = run_cli(PROMPT + ["--prompt", "a"], capsys)
    assert "DEBUG" not in plain


def test_log_lines_come_at_most_once_per_interval_and_the_last_always():
    stream, now = io.StringIO(), [0.0]
    status = Status(0, stream=stream, every_s=10.0, clock=lambda: now[0])
    seen = []
    status._write = seen.append  # what would be logged
    for t in range(25):
        now[0] = float(t)
        status.update(f"step {t}")
    status.done("finished")
    assert seen == ["step 0", "step 10", "step 20", "finished"]


def test_eval_without_a_terminal_counts_prompts_with_an_eta(mock_llama, capsys, tmp_path, dataset):
    argv = ["eval", "--model", "smollm2-135m", "--dataset", str(dataset), "--limit", "3", "-M", "2", "--methods", "parallel,eager-init",
            "--max-tokens", "24", "--template", "{question}", "--out", str(tmp_path / "run")]  # short prompts: the mock ends late
    code, out, err = run_cli(argv, capsys)
    assert code == 0 and "# EAGER evaluation" in out
    lines = [line for line in err.splitlines() if "trees: " in line]
    assert "trees: 6 prompts to run" in lines[0]
    assert re.search(r"trees: 0/6 prompts \(0%\), \d+ branches live, .* ETA (~\d+s|after the first step)", "\n".join(lines))
    assert re.search(r"trees: 6/6 prompts \(100%\).* 6 records written, .* ETA 0s$", lines[-1])


def test_the_eta_uses_finished_prompts_else_a_bound_from_the_steps():
    assert eta_s(5, 20, 50.0) == pytest.approx(150.0)  # 10 s a prompt, 15 left
    # none finished: 10 steps in 5 s; the 4 trees in flight end within 100 - 10 steps, the next 4 within 100 more
    assert eta_s(0, 8, 5.0, steps=10, max_steps=100, in_flight=4) == pytest.approx(0.5 * (90 + 100))
    assert eta_s(0, 8, 0.0) is None and eta_s(8, 8, 3.0) == 0.0
    assert (duration(42), duration(185), duration(3720)) == ("42s", "3m05s", "1h02m")


# -- the tree view: answers, the vote, long texts ---------------------------------------------


def _result(texts: list[str]) -> GenerationResult:
    sequences = [
        SequenceResult(index=i, text=t, token_ids=[5] * 10, parent=None if i == 0 else 0, fork_at=None if i == 0 else 3,
                       finish_reason="stop", own_text=t if i == 0 else t[3:])
        for i, t in enumerate(texts)
    ]
    forks = [ForkEvent(0, i, 3, 2.9, 2.5) for i in range(1, len(texts))]
    return GenerationResult("What is 17 * 23?", "eager-init", 12, sequences, forks, 25, 1.0, 1.0)


def test_each_branch_shows_its_answer_and_a_vote_line_closes_the_tree():
    view = render_tree(_result(["so \\boxed{391}", "so \\boxed{391}", "maybe \\boxed{400}", "I give up"]))
    assert "#0 root: 10 tokens, stop; answer 391" in view and "; answer 400" in view and "; no answer" in view
    assert view.splitlines()[-1] == "vote: 391 x2, 400 x1, none x1; majority 391 (2 of 4)"


def test_the_vote_groups_answers_math_verify_finds_equal_as_evals_cons_at_k_does():
    view = render_tree(_result(["\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{3}"]))
    assert view.splitlines()[-1] == "vote: 0.5 x2, 3 x1; majority 0.5 (2 of 3)"


def test_the_vote_says_so_when_no_sequence_answered_or_the_top_answers_tie():
    assert vote_line([None, None]) == "vote: no answers (2 sequences without one)"
    assert vote_line(["4", "5"]).endswith("majority 4 (1 of 2), tied: the first to appear wins")


def test_long_texts_show_their_end_by_default_and_everything_with_full():
    text = "reasoning " * 100 + "so the answer is \\boxed{391}"
    short = shown_text(text)
    assert short.endswith("\\boxed{391}") and " [...] " in short and len(short) < 420
    assert shown_text(text, full=True) == " ".join(text.split())
    full_view = render_tree(_result([text]), full=True)
    assert " [...] " not in full_view and full_view.count("reasoning") == 100


def test_generate_full_prints_whole_texts_and_the_default_their_ends(mock_llama, capsys, monkeypatch):
    def endless(history):  # never ends: every sequence runs to --max-tokens, one letter a token
        row = np.full(32, -5.0, dtype=np.float32)
        row[2 + len(history) % 26] = 5.0
        return row

    monkeypatch.setattr("eager.backends.llama.LlamaBackend", lambda *args, **kwargs: MockBackend(logits_fn=endless))
    argv = PROMPT + ["--prompt", "a", "--max-tokens", "600", "-M", "1"]
    _, short, _ = run_cli(argv, capsys)
    _, full, _ = run_cli(argv + ["--full"], capsys)
    text = json.loads(run_cli(argv + ["--json"], capsys)[1])["results"][0]["sequences"][0]["text"]
    assert len(text) == 600 and text in full and text not in short
    assert text[-TAIL:] in short and " [...] " in short


# -- the real path --------------------------------------------------------------------------


def test_smollm2_json_validates_and_names_the_model_file(capsys):
    argv = ["generate", "--model", "smollm2-135m", "--prompt", "What is 2+2?", "-M", "2", "--max-tokens", "8", "--threads", "1", "--ctx", "1024", "--json"]
    code, out, err = run_cli(argv, capsys)
    payload = json.loads(out)
    assert code == 0 and errors(payload, schema()) == []
    assert payload["settings"]["model_sha256"] == MODELS["smollm2-135m"].sha256 and payload["settings"]["ctx"] == 1024
    assert all(1 <= len(s["token_ids"]) <= 8 for s in payload["results"][0]["sequences"])
    assert "loading smollm2-135m (" in err and "1 thread, ctx 1024)" in err


def test_smollm2_on_a_real_pseudo_terminal_redraws_one_line():
    import os
    import pty
    import subprocess
    import sys
    from pathlib import Path

    eager = Path(sys.executable).parent / "eager"
    master, slave = pty.openpty()
    argv = [str(eager), "generate", "--model", "smollm2-135m", "--prompt", "Hi", "-M", "2", "--max-tokens", "8", "--threads", "1", "--ctx", "1024"]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, timeout=300)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other end is closed: all read
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    err = seen.decode()
    assert done.returncode == 0 and "vote:" in done.stdout.decode()
    assert err.startswith("eager: loading smollm2-135m (") and "\r\x1b[2K" in err and "1/1 prompts done" in err
    assert " INFO " not in err  # no log-file lines on a terminal
