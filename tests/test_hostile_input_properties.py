"""Property tests (hypothesis): whatever a server or a damaged file holds, eager raises only EagerError.

* the logprob and event parsers (eager.remote.logprobs, eager.remote.http)
  on arbitrary JSON-like values: tokens come out with sorted candidates and
  a finite entropy, or the error is an EagerError naming the server;
* record loading (eager.eval.report.read_jsonl, eager.eval.records.MethodRecords)
  on arbitrary bytes: records, or an EagerError that says FILE:LINE; good
  records written as lines read back unchanged.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eager.errors import EagerError
from eager.eval.records import MethodRecords
from eager.eval.report import RECORD_FIELDS, read_jsonl
from eager.remote.http import event_of
from eager.remote.logprobs import finish_reason, first_choice, parse_choice, token_entropies

URL = "http://127.0.0.1:9/v1"
BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = ["text", "logprobs", "tokens", "top_logprobs", "content", "token", "id", "logprob", "prob", "bytes",
        "top_probs", "finish_reason", "choices", "token_id:1", "token_id:x", "a"]  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "a", "token_id:5", "token_id:-3", "<|im_end|>", "stop", "length"]), st.text(max_size=5),
)  # fmt: skip
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=3), inner, max_size=5)),
    max_leaves=25,
)


def vllm_choice(values):
    top = {f"token_id:{i}": v for i, v in enumerate(values)}
    return {"text": "", "logprobs": {"tokens": ["token_id:0"], "top_logprobs": [top]}}


def llama_choice(values):
    top = [{"id": i, "token": str(i), "logprob": v} for i, v in enumerate(values)]
    return {"text": "", "logprobs": {"content": [{"id": 0, "token": "0", "logprob": values[0] if values else 0, "top_logprobs": top}]}}


choices = st.one_of(
    json_like,
    st.dictionaries(st.sampled_from(KEYS), json_like, max_size=4),
    st.lists(scalars, min_size=1, max_size=5).map(vllm_choice),
    st.lists(scalars, min_size=1, max_size=5).map(llama_choice),
    st.lists(st.floats(max_value=0.0, allow_nan=False), min_size=1, max_size=6).map(vllm_choice),
)


@BOUNDED
@given(choice=choices, k=st.integers(1, 20))
def test_the_logprob_parser_gives_sane_tokens_or_an_eager_error(choice, k):
    try:
        tokens = parse_choice(choice, k, URL)
        reason = finish_reason(choice, URL) if isinstance(choice, dict) else None
    except EagerError as error:
        assert "\n" not in str(error) and URL in str(error)
        return
    assert reason is None or isinstance(reason, str)
    for token in tokens:
        logprobs = [c.logprob for c in token.candidates]
        assert logprobs == sorted(logprobs, reverse=True) and len(logprobs) <= k
        assert all(not math.isnan(lp) and lp <= 1e-3 for lp in logprobs)
        if logprobs:
            assert math.isfinite(logprobs[0])
            (h,) = token_entropies([token])
            assert 0.0 <= h <= math.log(len(logprobs)) + 1e-9


@BOUNDED
@given(value=json_like)
def test_an_event_of_any_json_gives_a_choice_object_or_an_eager_error(value):
    try:
        choice = first_choice(event_of(json.dumps(value), URL), URL)
    except EagerError as error:
        assert URL in str(error)
        return
    except Exception as error:  # noqa: BLE001 (a Transient: retried by the caller, then an EagerError)
        assert type(error).__name__ == "Transient", repr(error)
        return
    assert isinstance(choice, dict)


# -- records -----------------------------------------------------------------------------------

LINE_ERROR = re.compile(r"^(.+\.jsonl):(\d+): ")
plain = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5))
records = st.fixed_dictionaries(
    {"id": st.text(max_size=8), "M": st.integers(1, 64), "sequences": st.lists(st.dictionaries(st.text(max_size=4), plain, max_size=3), max_size=3)},
    optional={"note": st.text(max_size=10), "score": st.floats(allow_nan=False, allow_infinity=False)},
)  # fmt: skip
lines = st.one_of(st.binary(max_size=40), records.map(lambda r: json.dumps(r, ensure_ascii=False).encode()), json_like.map(lambda v: json.dumps(v).encode()))


def _check_error(error: EagerError, path: Path, n_lines: int) -> None:
    match = LINE_ERROR.match(str(error))
    assert match and match.group(1) == str(path) and 1 <= int(match.group(2)) <= n_lines, str(error)


@BOUNDED
@given(parts=st.lists(lines, max_size=6), newline_at_end=st.booleans())
def test_loading_any_bytes_gives_records_or_a_file_line_error(parts, newline_at_end):
    data = b"\n".join(parts) + (b"\n" if newline_at_end else b"")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "eager-init.jsonl"
        path.write_bytes(data)
        for load in (lambda: read_jsonl(path, RECORD_FIELDS), lambda: MethodRecords(path, keep=True).by_key):
            try:
                load()
            except EagerError as error:
                _check_error(error, path, data.count(b"\n") + 1)


@BOUNDED
@given(written=st.lists(records, max_size=6), newline_at_end=st.booleans())
def test_good_records_read_back_unchanged_even_without_the_last_newline(written, newline_at_end):
    data = "\n".join(json.dumps(r, ensure_ascii=False) for r in written) + ("\n" if newline_at_end and written else "")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "parallel.jsonl"
        path.write_text(data, encoding="utf-8")
        assert read_jsonl(path, RECORD_FIELDS) == written
        kept = MethodRecords(path, keep=True)  # mends a missing last newline, keeps the record
        assert kept.done == {(r["id"], r["M"]) for r in written}
        assert read_jsonl(path, RECORD_FIELDS) == written and (not written or path.read_bytes().endswith(b"\n"))
