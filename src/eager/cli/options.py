"""Command-line options built from the config dataclasses, so every default, help
text and check is stated once, in :mod:`eager.core.config` (and the other configs).

The library names options by their field names (``max_tokens``); the CLI maps
those names to flags in error messages (:func:`flagged`).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, Field, fields
from typing import Any, Iterable

from eager.core.config import option_flag, options_of

_TYPES = {"int": int, "float": float, "str": str}


def _value_type(f: Field):
    name = str(f.type).replace("None", "").replace("|", "").strip()
    return _TYPES.get(name, str)


def _help(f: Field) -> str:
    default = f.default if f.default is not MISSING else None
    return f.metadata["help"].replace("{default}", str(default))


def add_config_options(group, cls, *, exclude: Iterable[str] = ()) -> None:
    """One flag per option of ``cls``; the parsed value lands under the field's name."""
    skip = set(exclude)
    for f in options_of(cls):
        if f.name in skip:
            continue
        flags = [option_flag(f)] + ([f.metadata["short"]] if f.metadata.get("short") else [])
        if f.default is True:
            group.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false", default=True, help=_help(f))
        elif f.default is False:
            group.add_argument(*flags, dest=f.name, action="store_true", default=False, help=_help(f))
        else:
            choices = f.metadata.get("choices")
            group.add_argument(*flags, dest=f.name, type=_value_type(f), default=f.default, choices=choices, help=_help(f))


def config_from_args(cls, args: argparse.Namespace, *, exclude: Iterable[str] = (), **values: Any):
    """An instance of ``cls`` from the parsed options (``values`` override or fill excluded ones)."""
    skip = set(exclude)
    given = {f.name: getattr(args, f.name) for f in options_of(cls) if f.name not in skip}
    return cls(**{**given, **values})


def flag_names(*classes) -> dict[str, str]:
    """Field name -> flag, for the options of the classes whose names cannot be plain words (they hold a "_")."""
    return {f.name: option_flag(f) for cls in classes for f in fields(cls) if "help" in f.metadata and "_" in f.name}


def flagged(message: str, names: dict[str, str]) -> str:
    """A library message with option names replaced by the flags a CLI user types."""
    if not names:
        return message
    pattern = re.compile(r"(?<![\w-])(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")(?![\w-])")
    return pattern.sub(lambda m: names[m.group(1)], message)
