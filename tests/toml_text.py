"""TOML text from plain Python trees, for the fuzz tests that write configs and scenarios (inline
tables and arrays only: that is all it takes to write any tree, including invalid values)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any


def toml_value(value: Any, other: Callable[[Any], str] | None = None) -> str:
    """A TOML literal for `value`; `other` renders any other type (else TypeError)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string (lone surrogates make it invalid TOML: fine)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v, other) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v, other)}" for k, v in value.items()) + "}"
    if other is not None:
        return other(value)
    raise TypeError(value)


def to_toml(tree: dict[str, Any], other: Callable[[Any], str] | None = None) -> str:
    """A TOML document of `tree`'s top-level keys."""
    return "".join(f"{json.dumps(key)} = {toml_value(value, other)}\n" for key, value in tree.items())
