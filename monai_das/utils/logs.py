"""Logging helpers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping

__all__ = ["quiet_loggers"]


@contextlib.contextmanager
def quiet_loggers(levels: Mapping[str, int]) -> Iterator[None]:
    """
    Raise the named loggers to at least the given levels while the block runs, then restore their own levels.

    A logger already quieter than asked stays as it is. Used to keep third-party chatter (the ONNX exporter's, the
    bundle set-up's) out of a run's log without hiding its errors.

    Args:
        levels: ``{logger name: minimum level}``, e.g. ``{"onnxscript": logging.WARNING}``.
    """
    loggers = {logging.getLogger(name): level for name, level in levels.items()}
    before = {lg: lg.level for lg in loggers}
    for lg, level in loggers.items():
        lg.setLevel(max(level, lg.getEffectiveLevel()))
    try:
        yield
    finally:
        for lg, level in before.items():
            lg.setLevel(level)
