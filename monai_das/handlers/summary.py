"""One line at the end of training that says how it went: the best validation epoch and what it kept."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from monai.utils import IgniteInfo, min_version, optional_import

from monai_das.handlers.diagnostics import not_best_reason

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")

__all__ = ["TrainingSummaryHandler"]


class TrainingSummaryHandler:
    """
    Records the validator's metrics after every validation and, when training completes, logs the best epoch by
    ``key_metric`` (epochs vetoed by :func:`~monai_das.handlers.diagnostics.not_best_reason`, i.e. predictions that
    did not vary across items or a learned sampler still in its warm-up, are never the best, as for the best-model
    checkpoint) with the ``report`` metrics of that epoch, e.g.
    ``training done: best val_auc 0.981 at epoch 7 (val_evidence_kept 0.953, val_adaptivity 0.41) of 8``.
    ``history`` keeps every validation's metrics; ``best`` the chosen one.

    Attach to the trainer; ``validator`` is the validation engine (its metrics are read after each of its runs).

    Args:
        validator: the validation evaluator.
        key_metric: metric that decides the best epoch (higher is better).
        report: other metrics to show for that epoch (missing ones are left out).
    """

    def __init__(self, validator: Any, key_metric: str = "val_auc",
                 report: Sequence[str] = ("val_evidence_kept", "val_adaptivity", "val_balanced_accuracy")) -> None:
        self.validator = validator
        self.key_metric = key_metric
        self.report = tuple(report)
        self.logger = logging.getLogger(__name__)
        self.history: list[dict] = []
        self.best: dict | None = None

    def attach(self, engine: Any) -> None:
        self._trainer = engine
        self.validator.add_event_handler(Events.EPOCH_COMPLETED, self._record)
        engine.add_event_handler(Events.COMPLETED, self)

    def _record(self, validator: Any) -> None:
        metrics = {k: float(v) for k, v in validator.state.metrics.items() if isinstance(v, (int, float))}
        metrics["epoch"] = int(self._trainer.state.epoch)
        metrics["not_best"] = not_best_reason(validator.state)
        self.history.append(metrics)

    def __call__(self, engine: Any) -> None:
        usable = [h for h in self.history if not h["not_best"] and not math.isnan(h.get(self.key_metric, math.nan))]
        if not usable:
            msg = f"training done after {engine.state.epoch} epochs: no validation epoch with a usable {self.key_metric}"
        else:
            self.best = max(usable, key=lambda h: h[self.key_metric])
            extra = ", ".join(f"{k} {self.best[k]:.3f}" for k in self.report if k in self.best)
            msg = (f"training done: best {self.key_metric} {self.best[self.key_metric]:.3f} at epoch "
                   f"{self.best['epoch']} of {engine.state.epoch}" + (f" ({extra})" if extra else ""))
        if idist.get_rank() == 0:
            self.logger.info(msg)
