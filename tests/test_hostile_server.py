"""A hostile server never hangs eager, crashes it or leaks a credential.

Every misbehaviour of tests/hostile_server.py ends in one clear EagerError
line naming the server (or in a correct retry), within a bounded time; the
time-outs are ``timeout_s`` (a request's whole life) and ``read_timeout_s``
(silence, keep-alive comments included). Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eager.core.config import BranchingConfig, SamplingConfig
from eager.core.tree import tree_requests
from eager.errors import EagerError
from eager.remote import generate_remote, redact
from hostile_server import HostileServer, logprob_event
from scripted_server import serving

FAST = {"timeout_s": 30.0, "read_timeout_s": 0.5, "retries": 1, "backoff_s": 0.01}
TESTS = Path(__file__).parent


@pytest.fixture
def hostile():
    """Start hostile servers on demand; each is stopped after the test."""
    stack = []

    def start(mode: str = "", **knobs) -> tuple[HostileServer, str]:
        server = HostileServer(mode, **knobs)
        context = serving(server)
        stack.append(context)
        return server, context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def run(url: str, *, M: int = 2, max_tokens: int = 8, **http):
    branching = BranchingConfig(max_sequences=M, theta=1.0, dynamic_theta=False, end_of_thinking="")
    requests = tree_requests(["p"], method="eager-init", branching=branching, sampling=SamplingConfig(max_tokens=max_tokens), chat=False)
    return generate_remote(requests, url=url, max_concurrency=1, **{**FAST, **http})


def one_line_error(call, pattern: str, within_s: float) -> str:
    start = time.monotonic()
    with pytest.raises(EagerError) as info:
        call()
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "\n" not in message and elapsed < within_s, (message, elapsed)
    assert pattern in message, message
    return message


@pytest.mark.parametrize("mode", ["keepalive", "empty-events", "trickle"])
def test_a_stream_that_sends_no_event_is_cut_by_the_read_time_out(hostile, mode):
    _, url = hostile(mode)
    message = one_line_error(lambda: run(url), "sent no event for 0.5 s", within_s=6)
    assert url in message and "gave up after 1 retries" in message


@pytest.mark.parametrize("mode", ["keepalive", "trickle"])
def test_the_time_out_bounds_a_requests_whole_life_whatever_the_server_sends(hostile, mode):
    _, url = hostile(mode)
    message = one_line_error(lambda: run(url, max_tokens=10**6, timeout_s=1.0, read_timeout_s=30.0), "outlived the time-out of 1 s", within_s=8)
    assert url in message


def test_an_endless_stream_that_ignores_max_tokens_still_gives_max_tokens(hostile):
    _, url = hostile("endless")
    start = time.monotonic()
    (result,) = run(url, M=1, max_tokens=6)
    assert time.monotonic() - start < 5
    assert [len(s.token_ids) for s in result.sequences] == [6] and result.sequences[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("mode", "pattern"),
    [
        ("models-list", "/v1/models sent no list of models under 'data'"),
        ("models-garbage", "/v1/models sent something that is not JSON"),
        ("probe-list", "/v1/completions sent a completion that is not a JSON object"),
    ],
)
def test_a_probe_answered_with_the_wrong_json_is_one_line_naming_the_server(hostile, mode, pattern):
    _, url = hostile(mode)
    one_line_error(lambda: run(url), f"the server at {url.removesuffix('/v1')}", within_s=5)
    one_line_error(lambda: run(url), pattern, within_s=5)


BAD_EVENTS = [
    ('{"choices": "x"}', "choices that are not a list of objects"),
    ('{"choices": [5]}', "choices that are not a list of objects"),
    ('[1, 2]', "an event that is not a JSON object"),
    ('{"choices": [{"text": 5, "logprobs": null}]}', "a token text that is not a string"),
    ('{"choices": [{"text": "a", "logprobs": "abc"}]}', "logprobs that are not an object"),
    ('{"choices": [{"text": "a", "logprobs": null}]}', "without top-K logprobs"),
    ('{"choices": [{"text": "a", "logprobs": {"tokens": "abc", "top_logprobs": []}}]}', "tokens that are not a list of str"),
    ('{"choices": [{"text": "a", "logprobs": {"content": [{"top_logprobs": [{"logprob": "x"}]}]}}]}', "a logprob that is not a number"),
    ('{"choices": [{"text": "a", "logprobs": {"content": [7]}}]}', "a logprobs content entry that is not an object"),
    ('{"choices": [{"text": "", "finish_reason": 3, "logprobs": null}]}', "a finish_reason that is not a string"),
    (logprob_event("NaN", "-1.0"), "an impossible logprob (NaN, or above 0): nan"),
    (logprob_event("Infinity", "-1.0"), "an impossible logprob (NaN, or above 0): inf"),
    (logprob_event("1e308", "-1.0"), "an impossible logprob (NaN, or above 0): 1e+308"),
    (logprob_event('"-0.5"', "-1.0"), "a logprob that is not a number: '-0.5'"),
    (logprob_event("true", "-1.0"), "a logprob that is not a number: True"),
    (logprob_event("-Infinity", "-Infinity"), "top logprobs that are all -inf"),
]


@pytest.mark.parametrize(("event", "pattern"), BAD_EVENTS, ids=[p for _, p in BAD_EVENTS])
def test_an_event_of_the_wrong_shape_is_one_line_naming_the_server(hostile, event, pattern):
    _, url = hostile(bad_event=event)
    message = one_line_error(lambda: run(url), pattern, within_s=5)
    assert url in message and "Error" not in message.split(":")[0]


def test_an_event_without_choices_is_skipped_and_a_stream_without_an_end_is_retried(hostile):
    _, url = hostile(bad_event="{}")  # (a usage-only chunk has no choices either)
    (result,) = run(url, M=1, max_tokens=6)
    assert len(result.sequences[0].token_ids) == 6


def test_one_candidate_at_minus_infinity_is_a_zero_probability_and_a_huge_negative_one_is_fine(hostile):
    for event in (logprob_event("-1.0", "-Infinity"), logprob_event("-0.01", "-1e308")):
        _, url = hostile(bad_event=event)
        (result,) = run(url, M=1, max_tokens=6)
        assert all(0.0 <= h <= 2.0 for h in result.sequences[0].entropies)


@pytest.mark.parametrize("status", [500, 503])
def test_a_failing_answer_then_success_is_retried(hostile, status):
    server, url = hostile(fail_first=1, fail_status=status)
    (result,) = run(url, M=1, max_tokens=6)
    assert len(result.sequences[0].token_ids) == 6 and server.streams == 2


def test_a_connection_reset_mid_stream_resumes_after_the_tokens_it_had(hostile):
    server, url = hostile("reset-once")
    (result,) = run(url, M=1, max_tokens=6)
    assert result.sequences[0].token_ids == [1000, 1001, 1002, 1003, 1004, 1005]
    assert server.resets == 1 and server.prompts[1][-2:] == [1000, 1001]  # the retry went on after its 2 tokens


def test_a_server_that_always_resets_is_one_line(hostile):
    _, url = hostile("reset")
    one_line_error(lambda: run(url, M=1, max_tokens=6, retries=2), "gave up after 2 retries", within_s=5)


# -- credentials ------------------------------------------------------------------------------


def test_user_and_password_in_the_url_become_basic_auth_and_are_never_shown(hostile):
    server, url = hostile()
    secret_url = url.replace("http://", "http://alice:hunter2@")
    (result,) = run(secret_url, M=1, max_tokens=4)
    assert server.authorization == {"Basic " + base64.b64encode(b"alice:hunter2").decode()}
    assert len(result.sequences[0].token_ids) == 4
    _, broken = hostile("models-list")
    message = one_line_error(lambda: run(broken.replace("http://", "http://alice:hunter2@")), "sent no list", within_s=5)
    assert "hunter2" not in message and "alice" not in message


def test_a_key_in_the_url_is_sent_as_bearer_in_place_of_the_environments(hostile, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    server, url = hostile()
    run(url.replace("http://", "http://sk-in-url@"), M=1, max_tokens=2)
    assert server.authorization == {"Bearer sk-in-url"}


def test_redact_hides_userinfo_and_secret_query_values_only():
    assert redact("openai:http://u:p@h:1/v1#m") == "openai:http://***@h:1/v1#m"
    assert redact("see https://KEY@h/v1?api_key=abc&x=1 now") == "see https://***@h/v1?api_key=***&x=1 now"
    assert redact("mail me at a@b.c, model /x/y.gguf") == "mail me at a@b.c, model /x/y.gguf"


def test_cli_errors_config_json_and_summaries_never_hold_the_password(hostile, tmp_path, capsys):
    from eager.cli import main

    _, url = hostile()
    model = "openai:" + url.replace("http://", "http://alice:hunter2@")
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n', encoding="utf-8")
    out = tmp_path / "run"
    code = main(["eval", "--model", model, "--raw-prompt", "--dataset", str(data), "--methods", "parallel", "-M", "2",
                 "--theta", "1.0", "--max-tokens", "4", "--timeout", "20", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    for path in sorted(out.iterdir()):
        if path.suffix in (".json", ".md", ".jsonl"):
            assert "hunter2" not in path.read_text(encoding="utf-8"), path.name
    assert "***@127.0.0.1" in json.loads((out / "config.json").read_text())["model"]
    assert "hunter2" not in printed.out + printed.err
    _, broken = hostile("models-list")
    code = main(["generate", "--model", "openai:" + broken.replace("http://", "http://alice:hunter2@"), "--raw-prompt", "--prompt", "hi"])
    err = capsys.readouterr().err
    assert code == 2 and "hunter2" not in err and err.strip().splitlines()[-1].startswith("eager: error: the server at")


def test_cli_timeout_flags_reach_the_requests(hostile, capsys):
    from eager.cli import main

    _, url = hostile("keepalive")
    start = time.monotonic()
    code = main(["generate", "--model", f"openai:{url}", "--raw-prompt", "--prompt", "hi", "--timeout", "1", "--read-timeout", "30", "-M", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "outlived the time-out of 1 s" in err and time.monotonic() - start < 12
    assert main(["generate", "--model", f"openai:{url}", "--prompt", "hi", "--timeout", "0"]) == 2
    assert "--timeout must be a number of seconds > 0" in capsys.readouterr().err


# -- Ctrl-C --------------------------------------------------------------------------------------


def test_ctrl_c_ends_a_remote_generate_promptly(tmp_path):
    """SIGINT to `eager generate` on a slow server: exit 130 within seconds, one line, no traceback."""
    server = subprocess.Popen([sys.executable, str(TESTS / "hostile_server.py"), "--delay", "0.5"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[1])
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cli = subprocess.Popen(
            [sys.executable, "-m", "eager.cli", "generate", "--model", f"openai:http://127.0.0.1:{port}/v1", "--raw-prompt",
             "--prompt", "hi", "-M", "4", "--theta", "1.0", "--max-tokens", "200"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        time.sleep(4.0)  # probed, streaming (200 tokens at 0.5 s each would take 100 s)
        assert cli.poll() is None
        start = time.monotonic()
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=10)
        assert time.monotonic() - start < 5
        assert cli.returncode == 130 and "Traceback" not in err and err.strip().splitlines()[-1] == "eager: interrupted", err
    finally:
        server.kill()
        server.wait(5)


def test_help_names_the_key_variable_and_the_time_outs(capsys):
    from eager.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "$OPENAI_API_KEY" in out and "USER:PASSWORD@HOST (Basic auth)" in out
    assert "--timeout TIMEOUT_S" in out and "(default: 600.0)" in out and "--read-timeout" in out
