"""What a command says while it runs: logging (``-v``/``-q``) and progress.

The library logs (``logging.getLogger(__name__)`` under ``eager``); this module
gives those records one handler on standard error, at the level ``-v``/``-q``
chose. Progress goes out in one of three ways:

- on a terminal, one live status line redrawn in place (log records are written
  above it), left on screen when the run ends;
- elsewhere (nohup, a log file, a scheduler), plain log lines on the
  ``eager.progress`` logger, at most one every ``EAGER_PROGRESS_INTERVAL`` seconds
  (default 15), as vLLM logs its throughput, and one when the phase ends;
- with ``-q``, nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Callable, TextIO

LOGGER = "eager"
PROGRESS_LOGGER = "eager.progress"
DEFAULT_INTERVAL_S = 15.0
REDRAW_S = 0.1  # a terminal line is redrawn at most ten times a second
INTERVAL_ENV = "EAGER_PROGRESS_INTERVAL"

progress_log = logging.getLogger(PROGRESS_LOGGER)


def add_verbosity_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-v``/``-q``; on a subcommand they default to SUPPRESS so that ``eager -v generate`` keeps its -v."""
    default = 0 if top else argparse.SUPPRESS
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=default, help="also log debug messages")
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=default, help="only warnings and errors: no progress, no info lines")


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record comes (tests swap it), which clears a live line first."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.live: LiveLine | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # not setStream: it would flush the old one, perhaps closed
        if self.live is not None:
            self.live.clear()
        super().emit(record)
        if self.live is not None:
            self.live.redraw()


class _Format(logging.Formatter):
    """Terminal: ``eager: message`` (``eager: warning: ...``); elsewhere a time stamp and the level."""

    def __init__(self, terminal: bool, verbose: bool) -> None:
        self.terminal = terminal
        where = " %(name)s" if verbose else ""
        super().__init__(f"%(asctime)s %(levelname)s{where}: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if not self.terminal:
            return super().format(record)
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"eager: {level}{record.getMessage()}"


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def configure_logging(verbosity: int) -> Callable[[], None]:
    """One handler for the ``eager`` loggers: WARNING with -q, INFO by default, DEBUG with -v.

    Returns a function that puts the ``eager`` logger back as it was (``main`` called from a program).
    """
    root = logging.getLogger(LOGGER)
    before = (root.level, root.propagate)
    handler = _Stderr()
    handler.setFormatter(_Format(is_terminal(), verbosity > 0))
    root.addHandler(handler)
    root.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    root.propagate = False

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(before[0])
        root.propagate = before[1]

    return restore


def _handler() -> _Stderr | None:
    return next((h for h in logging.getLogger(LOGGER).handlers if isinstance(h, _Stderr)), None)


class LiveLine:
    """One status line on a terminal, redrawn in place."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.text = ""

    def show(self, text: str) -> None:
        self.text = text
        self.redraw()

    def redraw(self) -> None:
        if self.text:
            self.stream.write("\r\x1b[2K" + self.text)
            self.stream.flush()

    def clear(self) -> None:
        if self.text:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

    def end(self) -> None:
        """Leave the last status on screen and move below it."""
        if self.text:
            self.redraw()
            self.stream.write("\n")
            self.stream.flush()
        self.text = ""


def interval_s() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


class Status:
    """A run's status: a live line on a terminal, log lines every ``interval`` seconds elsewhere, nothing with -q.

    ``update(text)`` may be called after every engine step: it costs a clock read
    unless a line is due. ``done(text)`` writes the last status whatever the interval.
    """

    def __init__(self, verbosity: int, *, stream: TextIO | None = None, every_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.mode = "off" if verbosity < 0 else "line" if is_terminal(self.stream) else "log"
        self.every_s = interval_s() if every_s is None else every_s
        self.clock = clock
        self.last = None
        self.written = None  # the last text written
        self.live = LiveLine(self.stream) if self.mode == "line" else None
        handler = _handler()
        if handler is not None and self.live is not None:
            handler.live = self.live

    def update(self, text: str) -> None:
        if self.mode == "off":
            return
        now = self.clock()
        gap = REDRAW_S if self.mode == "line" else self.every_s
        if self.last is not None and now - self.last < gap:
            return
        self.last = now
        self._write(text)

    def done(self, text: str | None = None) -> None:
        """The final status of a phase (always written), then the line is closed."""
        if text is not None and self.mode != "off" and text != self.written:
            self._write(text)
        self.close()

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
            handler = _handler()
            if handler is not None and handler.live is self.live:
                handler.live = None
            self.live = None
            self.mode = "off"

    def _write(self, text: str) -> None:
        self.written = text
        if self.live is not None:
            self.live.show(text)
        else:
            progress_log.info("%s", text)


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta_s(done: int, total: int, elapsed_s: float, *, steps: int = 0, max_steps: int = 0, in_flight: int = 0) -> float | None:
    """Seconds left, or None when nothing is known yet.

    Once prompts have finished: the time per finished prompt so far times the prompts left.
    Before any has (trees grow together and finish together), an estimate from the steps:
    a tree in the cache finishes within ``max_steps`` steps (its longest sequence), so at the
    time per step so far the trees in flight end after ``max_steps - steps`` more steps,
    each later wave after ``max_steps``.
    """
    left = total - done
    if left <= 0:
        return 0.0
    if done > 0 and elapsed_s > 0:
        return elapsed_s / done * left
    if steps <= 0 or max_steps <= 0 or in_flight <= 0:
        return None
    per_step = elapsed_s / steps
    waves = -(-left // in_flight)  # ceil
    return per_step * (max(0, max_steps - steps) + (waves - 1) * max_steps)
