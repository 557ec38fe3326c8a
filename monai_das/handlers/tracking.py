"""Experiment-tracking helpers for the bundle configs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from monai.handlers import MLFlowHandler

__all__ = ["unique_trackers"]

logger = logging.getLogger(__name__)


def _target(h: MLFlowHandler) -> tuple:
    return (getattr(h.client, "tracking_uri", None), h.experiment_name, h.run_name)


def unique_trackers(handlers: Sequence[Any] | None) -> list[Any] | None:
    """
    ``handlers`` with repeated :class:`monai.handlers.MLFlowHandler` instances that log to the same store,
    experiment and run merged into the first one (the later ones' ``artifacts`` are added to it, then they are
    dropped). The bundle's configs track to MLflow by themselves; ``python -m monai.bundle run --tracking mlflow``
    appends MONAI's default handlers (pointing at the same ``tracking_uri``/``experiment_name``/``run_name`` keys),
    and without this every metric would be logged twice. Disabled (``None``) entries are dropped.
    """
    if handlers is None:
        return None
    out: list[Any] = []
    first: dict[tuple, MLFlowHandler] = {}
    for h in handlers:
        if h is None:
            continue
        if isinstance(h, MLFlowHandler):
            key = _target(h)
            if key in first:
                keep = first[key]
                keep.artifacts = tuple(dict.fromkeys([*keep.artifacts, *h.artifacts]))
                logger.info(f"merged a duplicate MLFlowHandler (experiment {h.experiment_name!r}) into the first one.")
                continue
            first[key] = h
        out.append(h)
    return out
