"""Small helpers for values that come from the bundle command line."""

from __future__ import annotations

from typing import Any

__all__ = ["flag", "optional", "precise_bn_batches", "PRECISE_BN_AUTO_BATCHES", "sampler_warmup_epochs"]

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


#: share of the training epochs spent on the sampler warm-up when ``sampler_warmup_epochs`` is ``"auto"``
WARMUP_AUTO_FRACTION = 0.2


def sampler_warmup_epochs(value: Any, max_epochs: int) -> int:
    """
    Epochs of encoder warm-up on random subsets (:class:`monai_das.handlers.SamplerWarmupHandler`): ``"auto"`` is
    ``floor(0.2·max_epochs)`` (15 → 3, 5 → 1, 100 → 20, fewer than 5 → 0), an integer ``>= 0`` is used as given.
    """
    if isinstance(value, str) and value.lower() == "auto":
        return int(WARMUP_AUTO_FRACTION * int(max_epochs))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or int(value) != value:
        raise ValueError(f"sampler_warmup_epochs must be 'auto' or an integer >= 0, got {value!r}.")
    return int(value)
