"""A small JSON Schema checker for the keywords our schemas use (type, enum, required,
properties, additionalProperties, items, minItems, minimum, oneOf, $ref to #/$defs),
so the output tests need no extra package; where ``jsonschema`` is installed a test
checks the same outputs with it as well."""

from __future__ import annotations

from typing import Any

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
KNOWN = {"$schema", "$id", "$defs", "title", "description", "type", "enum", "required", "properties",
         "additionalProperties", "items", "minItems", "minimum", "oneOf", "$ref"}


def errors(value: Any, schema: dict, root: dict | None = None, where: str = "$") -> list[str]:
    """Every violation of ``schema`` by ``value``, as ``path: what``; [] when it is valid."""
    root = root or schema
    unknown = set(schema) - KNOWN
    if unknown:
        raise ValueError(f"{where}: the checker does not know {sorted(unknown)}")
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return errors(value, root["$defs"][name], root, where)
    found: list[str] = []
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in types):
            return [f"{where}: {value!r:.60} is not {' or '.join(types)}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and _TYPES["number"](value) and value < schema["minimum"]:
        found.append(f"{where}: {value} < {schema['minimum']}")
    if isinstance(value, dict):
        found += _object_errors(value, schema, root, where)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            found.append(f"{where}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                found += errors(item, schema["items"], root, f"{where}[{i}]")
    if "oneOf" in schema:
        matching = [s for s in schema["oneOf"] if not errors(value, s, root, where)]
        if len(matching) != 1:
            found.append(f"{where}: matches {len(matching)} of oneOf, not exactly one")
    return found


def _object_errors(value: dict, schema: dict, root: dict, where: str) -> list[str]:
    found = [f"{where}: missing {key!r}" for key in schema.get("required", []) if key not in value]
    properties = schema.get("properties", {})
    for key, item in value.items():
        if key in properties:
            found += errors(item, properties[key], root, f"{where}.{key}")
        elif schema.get("additionalProperties", True) is False:
            found.append(f"{where}: unexpected {key!r}")
    return found
