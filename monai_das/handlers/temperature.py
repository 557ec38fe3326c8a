"""A temperature schedule for the Gumbel-softmax relaxation of the learned samplers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_das.handlers.utils import attach_once
from monai_das.networks.utils import unwrap_network

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["TemperatureScheduleHandler", "scheduled_temperature"]

logger = logging.getLogger(__name__)


def scheduled_temperature(epoch: int, start: float, end: float, first: int, last: int) -> float:
    """Geometric interpolation from ``start`` at epoch ``first`` to ``end`` at epoch ``last`` (held outside)."""
    if last <= first:
        return float(end) if epoch >= last else float(start)
    f = min(max((epoch - first) / (last - first), 0.0), 1.0)
    return float(start) * (float(end) / float(start)) ** f


class TemperatureScheduleHandler:
    """
    Anneals the base temperature of a learned sampler's Gumbel-softmax relaxation over the training epochs: ``τ0``
    of DAS (whose temperature stays adaptive around it, ``τ = τ0·(0.5 + σ(MLP(F̄)))``), ``tau`` of DPS and ADPS.
    A high temperature early spreads the straight-through gradient over many frames (exploration); a low one late
    makes the relaxed rows close to the hard one-hot choice used in eval. Geometric from ``start`` at the first epoch
    after the encoder warm-up to ``end`` at ``max_epochs``.

    The temperature is a function of the trainer's epoch only (set at every ``EPOCH_STARTED``), so a resumed run
    follows the same schedule; eval-mode selection (top-k) does not depend on it. Samplers without a temperature are
    left alone; the built value is restored when training completes.

    Args:
        network: the classifier (DDP wrappers are unwrapped).
        schedule: ``None`` (off) or ``[start, end]`` positive temperatures.
        max_epochs: the last epoch of the schedule.
        warmup_epochs: epochs of encoder warm-up (the schedule starts after them).
    """

    def __init__(self, network: torch.nn.Module, schedule: Sequence[float] | None = None, max_epochs: int = 1,
                 warmup_epochs: int = 0) -> None:
        self.network = network
        self.schedule = None
        if schedule is not None:
            try:
                start, end = (float(v) for v in schedule)
            except (TypeError, ValueError):
                raise ValueError(f"temperature_schedule must be null or [start, end], got {schedule!r}.") from None
            if not (start > 0 and end > 0) or float("inf") in (start, end):
                raise ValueError(f"temperature_schedule temperatures must be positive and finite, got {schedule!r}.")
            self.schedule = (start, end)
        self.first, self.last = int(warmup_epochs) + 1, int(max_epochs)
        self._built: float | None = None

    def _sampler_attr(self) -> tuple[Any, str | None]:
        sampler = unwrap_network(self.network).sampler
        if not getattr(sampler, "learnable", False):
            return sampler, None
        return sampler, next((a for a in ("tau0", "tau") if isinstance(getattr(sampler, a, None), float)), None)

    def attach(self, engine: Any) -> None:
        if self.schedule is None:
            return
        attach_once(engine, Events.EPOCH_STARTED, self)
        attach_once(engine, Events.COMPLETED, self._finish)

    def __call__(self, engine: Any) -> None:
        sampler, attr = self._sampler_attr()
        if attr is None:
            return
        if self._built is None:
            self._built = getattr(sampler, attr)
        tau = scheduled_temperature(engine.state.epoch, *self.schedule, self.first, self.last)
        setattr(sampler, attr, tau)
        logger.info(f"epoch {engine.state.epoch}: sampler temperature {attr} = {tau:.4g}")

    def _finish(self, engine: Any) -> None:
        sampler, attr = self._sampler_attr()
        if attr is not None and self._built is not None:
            setattr(sampler, attr, self._built)
