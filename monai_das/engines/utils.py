"""Small helpers for values that come from the bundle command line."""

from __future__ import annotations

from typing import Any

__all__ = ["flag", "optional"]

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off", "none", "null", ""}


def flag(value: Any) -> bool:
    """
    A boolean from a config/CLI value: ``True``/``False``, numbers, or the strings ``true/false``, ``yes/no``,
    ``on/off``, ``1/0`` in any case (``python -m monai.bundle run --resume true`` passes the string ``"true"``).
    """
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, (int, float)):
        return value != 0
    s = str(value).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}.")


def optional(value: Any) -> Any:
    """``None`` for ``None``, ``""``, ``"none"`` and ``"null"`` (any case); the value otherwise."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    return value
