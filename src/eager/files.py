"""Reading user files: every failure is one line that names the file and the line."""

from __future__ import annotations

from pathlib import Path

from eager.errors import EagerError


def read_lines(path: str | Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file, without their line ends.

    A missing or unreadable file, or a line that is not valid UTF-8, raises
    :class:`EagerError` naming ``what`` (e.g. "prompt file"), the path and the line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EagerError(f"no such {what}: {path}") from None
    except OSError as error:
        raise EagerError(f"cannot read {what} {path}: {error.strerror or error}") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [_decoded(line, path, number, what) for number, line in enumerate(lines, start=1)]


def _decoded(line: bytes, path: Path, number: int, what: str) -> str:
    try:
        return line.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as error:
        raise EagerError(f"{what} {path}:{number}: not valid UTF-8 (byte 0x{line[error.start]:02x} at column {error.start + 1})") from None
