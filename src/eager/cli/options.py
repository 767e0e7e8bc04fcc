"""Command-line options built from the config dataclasses, so every default, help
text and check is stated once, in :mod:`eager.core.config` (and the other configs).

The library names options by their field names (``max_tokens``); the CLI maps
those names to flags in error messages (:func:`flagged`).

A preset (``--preset paper``) sets several options at once; an option given on the
command line keeps its value wherever it stands relative to ``--preset``. The
options built here remember that they were given (:class:`Given`,
:class:`GivenConst`), and the preset fills only the others.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, Field, fields
from typing import Any, Iterable

from eager.core.config import option_flag, options_of

_TYPES = {"int": int, "float": float, "str": str}
_GIVEN = "_given_options"  # namespace attribute: the dests given on the command line

# The reference implementation's settings (the paper's scripts, arXiv 2510.11170): M = 32
# sequences per prompt, up to 32768 new tokens, temperature 0.6, theta 2.5. ctx leaves room
# for one sequence of 32768 tokens and its prompt (a local model; a server has its own).
PAPER = {"max_sequences": 32, "max_tokens": 32768, "temperature": 0.6, "theta": 2.5, "ctx": 40960}
GENERATE_PRESETS: dict[str, dict[str, Any]] = {"paper": PAPER}
PRESET_ABOUT = {"paper": "the settings of the paper's reference scripts"}


def _value_type(f: Field):
    name = str(f.type).replace("None", "").replace("|", "").strip()
    return _TYPES.get(name, str)


def _help(f: Field) -> str:
    default = f.default if f.default is not MISSING else None
    return f.metadata["help"].replace("{default}", str(default))


def _mark_given(namespace: argparse.Namespace, dest: str) -> None:
    given = getattr(namespace, _GIVEN, None)
    if given is None:
        given = set()
        setattr(namespace, _GIVEN, given)
    given.add(dest)


class Given(argparse.Action):
    """``store``, remembering that the option was given (so a preset leaves it alone)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        _mark_given(namespace, self.dest)


class GivenConst(argparse.Action):
    """``store_true`` / ``store_false`` (``const``), remembering that the flag was given."""

    def __init__(self, option_strings, dest, const=None, default=None, required=False, help=None) -> None:
        super().__init__(option_strings, dest, nargs=0, const=const, default=default, required=required, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, self.const)
        _mark_given(namespace, self.dest)


def add_field_option(group, f: Field) -> None:
    """The flag of one config field; the parsed value lands under the field's name."""
    flags = [option_flag(f)] + ([f.metadata["short"]] if f.metadata.get("short") else [])
    if f.default is True:
        group.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action=GivenConst, const=False, default=True, help=_help(f))
    elif f.default is False:
        group.add_argument(*flags, dest=f.name, action=GivenConst, const=True, default=False, help=_help(f))
    else:
        choices = f.metadata.get("choices")
        group.add_argument(*flags, dest=f.name, action=Given, type=_value_type(f), default=f.default, choices=choices, help=_help(f))


def add_config_options(group, cls, *, exclude: Iterable[str] = ()) -> None:
    """One flag per option of ``cls``; the parsed value lands under the field's name."""
    skip = set(exclude)
    for f in options_of(cls):
        if f.name not in skip:
            add_field_option(group, f)


def config_from_args(cls, args: argparse.Namespace, *, exclude: Iterable[str] = (), **values: Any):
    """An instance of ``cls`` from the parsed options (``values`` override or fill excluded ones)."""
    skip = set(exclude)
    given = {f.name: getattr(args, f.name) for f in options_of(cls) if f.name not in skip}
    return cls(**{**given, **values})


class _Preset(argparse.Action):
    """Set a preset's values, except those of options given on the command line."""

    def __init__(self, option_strings, dest, presets: dict[str, dict[str, Any]], **kwargs) -> None:
        self.presets = presets
        super().__init__(option_strings, dest, choices=tuple(presets), **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        given = getattr(namespace, _GIVEN, set())
        for dest, value in self.presets[values].items():
            if dest not in given:  # an option given later overwrites the preset's value anyway
                setattr(namespace, dest, value)


def _flag_of(parser: argparse.ArgumentParser, dest: str) -> str:
    for action in parser._actions:  # argparse keeps no public index by dest
        if action.dest == dest and action.option_strings:
            return min(action.option_strings, key=len)
    raise ValueError(f"a preset sets {dest!r}, which is no option of {parser.prog}")


def _shown(value: Any) -> str:
    text = str(value)
    return repr(text) if not text or any(c in text for c in " {}") else text


def add_preset_option(parser: argparse.ArgumentParser, presets: dict[str, dict[str, Any]]) -> None:
    """``--preset NAME``: several options in one flag; options given on the command line win.

    Add it after the options it sets (every option a preset sets must be built with
    :class:`Given` / :class:`GivenConst`, as :func:`add_config_options` does).
    """
    described = "; ".join(
        f"{name} ({PRESET_ABOUT.get(name, 'a preset')}): "
        + " ".join(f"{_flag_of(parser, dest)} {_shown(value)}" for dest, value in values.items())
        for name, values in presets.items()
    )
    text = f"set several options at once. {described}. An option given on the command line keeps its value"
    parser.add_argument("--preset", action=_Preset, presets=presets, default=None, help=text.replace("%", "%%"))


def flag_names(*classes) -> dict[str, str]:
    """Field name -> flag, for the options of the classes whose names cannot be plain words (they hold a "_")."""
    return {f.name: option_flag(f) for cls in classes for f in fields(cls) if "help" in f.metadata and "_" in f.name}


def flagged(message: str, names: dict[str, str]) -> str:
    """A library message with option names replaced by the flags a CLI user types."""
    if not names:
        return message
    pattern = re.compile(r"(?<![\w-])(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")(?![\w-])")
    return pattern.sub(lambda m: names[m.group(1)], message)
