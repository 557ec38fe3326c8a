"""Test helper shared by the handler tests."""

from __future__ import annotations

from collections.abc import Sequence

from ignite.engine import Engine, Events


def engine_with_metric(name: str, values: Sequence[float]) -> Engine:
    """A no-op engine whose epoch ``e`` sets ``state.metrics[name] = values[e - 1]``."""
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _set(e):
        e.state.metrics[name] = values[e.state.epoch - 1]

    return engine
