"""Small helpers for values that come from the bundle command line."""

from __future__ import annotations

from typing import Any

__all__ = ["flag", "optional", "precise_bn_batches", "PRECISE_BN_AUTO_BATCHES"]

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


#: an epoch with fewer batches than this gets precise BatchNorm statistics when ``precise_bn_batches="auto"``
PRECISE_BN_AUTO_BATCHES = 30


def precise_bn_batches(value: Any, loader: Any = None, threshold: int = PRECISE_BN_AUTO_BATCHES) -> int:
    """
    The bundle's ``precise_bn_batches`` as a batch count for :class:`monai_das.handlers.PreciseBNHandler`: ``0``
    off, ``-1`` the whole training set, ``N`` that many batches; ``"auto"`` is ``-1`` when an epoch of ``loader`` has
    fewer than ``threshold`` batches (BatchNorm's running averages, momentum 0.1, then lag the weights so much that
    eval-mode predictions can ignore the input) and ``0`` otherwise.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return -1 if loader is not None and len(loader) < int(threshold) else 0
    n = int(value)
    if n < -1:
        raise ValueError(f"precise_bn_batches must be 'auto', -1, 0 or a positive number of batches, got {value!r}.")
    return n
