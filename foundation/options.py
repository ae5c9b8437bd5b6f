"""Options given as a dataclass or as a plain dict (docs/style.md), checked one way.

A dict comes from JSON, a CLI or an env var, where a typo would otherwise be dropped silently;
so every unknown key is named in the error, with the keys that are known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

OptionsT = TypeVar("OptionsT")


def coerce_options(
    cls: type[OptionsT], options: OptionsT | Mapping[str, Any] | None, *, what: str
) -> OptionsT:
    """``cls()`` for None, ``options`` itself if it is a ``cls``, else ``cls(**options)``."""
    if options is None:
        return cls()
    if isinstance(options, cls):
        return options
    if not isinstance(options, Mapping):
        raise TypeError(
            f"{what} options must be {cls.__name__}, a dict or None, not {type(options).__name__}"
        )
    assert is_dataclass(cls)
    known = {field.name for field in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {what} option(s) {unknown}; known: {sorted(known)}")
    return cls(**options)
