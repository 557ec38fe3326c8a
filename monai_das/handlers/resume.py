"""Handlers whose state goes into the "last" checkpoint so that a killed training resumes with nothing lost."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monai.handlers import EarlyStopHandler

__all__ = ["ResumableEarlyStopHandler", "EngineStateAttributes", "val_loss_score"]


def val_loss_score(metric_name: str = "val_loss") -> Callable:
    """Score function for early stopping on a loss metric: ``-engine.state.metrics[metric_name]`` (higher is better)."""

    def _score(engine: Any) -> float:
        if metric_name not in engine.state.metrics:
            raise KeyError(
                f"early stopping needs the metric {metric_name!r} in engine.state.metrics; "
                f"available: {sorted(engine.state.metrics)}."
            )
        return -float(engine.state.metrics[metric_name])

    return _score


class ResumableEarlyStopHandler(EarlyStopHandler):
    """
    :class:`monai.handlers.EarlyStopHandler` with ``state_dict()``/``load_state_dict()`` (ignite ``EarlyStopping``'s
    ``counter`` and ``best_score``), so the patience count survives a restart when the handler is part of the
    checkpoint's ``save_dict``. A state loaded before ``set_trainer()`` is kept and applied when the trainer is set.

    Arguments are those of :class:`monai.handlers.EarlyStopHandler`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pending_state: dict | None = None
        super().__init__(*args, **kwargs)

    def set_trainer(self, trainer: Any) -> None:
        super().set_trainer(trainer)
        if self._pending_state is not None:
            self._handler.load_state_dict(self._pending_state)  # type: ignore[union-attr]
            self._pending_state = None

    def state_dict(self) -> dict:
        if self._handler is None:
            return dict(self._pending_state or {"counter": 0, "best_score": None})
        return dict(self._handler.state_dict())

    def load_state_dict(self, state_dict: Mapping) -> None:
        if "counter" not in state_dict or "best_score" not in state_dict:
            raise ValueError(f"early-stopping state needs 'counter' and 'best_score', got {sorted(state_dict)}.")
        state = dict(state_dict)
        if self._handler is None:
            self._pending_state = state
        else:
            self._handler.load_state_dict(state)

    @property
    def counter(self) -> int:
        """Epochs since the last improvement."""
        return int(self.state_dict()["counter"])


def _plain(value: Any) -> Any:
    """Numbers as Python scalars so the checkpoint loads with ``torch.load(..., weights_only=True)``."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


class EngineStateAttributes:
    """
    Makes chosen ``engine.state`` attributes checkpointable (``state_dict``/``load_state_dict``), e.g. an evaluator's
    ``best_metric`` and ``best_metric_epoch``, which ignite's own ``Engine.state_dict`` leaves out.

    Args:
        engine: the ignite engine (e.g. the validation ``SupervisedEvaluator``).
        attributes: names of ``engine.state`` attributes to save and restore.
    """

    def __init__(self, engine: Any, attributes: Sequence[str] = ("best_metric", "best_metric_epoch")) -> None:
        self.engine = engine
        self.attributes = tuple(attributes)

    def state_dict(self) -> dict:
        return {a: _plain(getattr(self.engine.state, a, None)) for a in self.attributes}

    def load_state_dict(self, state_dict: Mapping) -> None:
        for a in self.attributes:
            if a in state_dict:
                setattr(self.engine.state, a, state_dict[a])
