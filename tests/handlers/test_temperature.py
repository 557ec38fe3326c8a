"""Temperature schedule of the learned samplers' Gumbel-softmax relaxation."""

from __future__ import annotations

import pytest
from ignite.engine import Engine, Events

from monai_das.handlers import TemperatureScheduleHandler
from monai_das.handlers.temperature import scheduled_temperature
from monai_das.networks import build_classifier


def test_geometric_schedule():
    assert scheduled_temperature(3, 2.0, 0.5, 3, 7) == pytest.approx(2.0)
    assert scheduled_temperature(5, 2.0, 0.5, 3, 7) == pytest.approx(1.0)  # half way: the geometric mean
    assert scheduled_temperature(7, 2.0, 0.5, 3, 7) == pytest.approx(0.5)
    assert scheduled_temperature(1, 2.0, 0.5, 3, 7) == 2.0 and scheduled_temperature(9, 2.0, 0.5, 3, 7) == 0.5
    assert scheduled_temperature(1, 2.0, 0.5, 4, 4) == 2.0 and scheduled_temperature(4, 2.0, 0.5, 4, 4) == 0.5


@pytest.mark.parametrize("method,attr", [("das", "tau0"), ("dps", "tau"), ("adps", "tau")])
def test_handler_follows_the_epoch_and_restores(method, attr):
    net = build_classifier(method, 2, 8)
    built = getattr(net.sampler, attr)
    seen = []
    engine = Engine(lambda e, b: seen.append(getattr(net.sampler, attr)))
    TemperatureScheduleHandler(net, [2.0, 0.5], max_epochs=5, warmup_epochs=1).attach(engine)
    engine.run([0], max_epochs=5)
    assert seen == pytest.approx([2.0, 2.0, 2.0 * 0.25 ** (1 / 3), 2.0 * 0.25 ** (2 / 3), 0.5])
    assert getattr(net.sampler, attr) == built
    # resumed at epoch 3: the same temperatures as the uninterrupted run
    seen.clear()
    engine = Engine(lambda e, b: seen.append(getattr(net.sampler, attr)))
    TemperatureScheduleHandler(net, [2.0, 0.5], max_epochs=5, warmup_epochs=1).attach(engine)
    engine.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", 2))
    engine.run([0], max_epochs=5)
    assert seen == pytest.approx([2.0 * 0.25 ** (1 / 3), 2.0 * 0.25 ** (2 / 3), 0.5])


def test_off_and_bad_values():
    net = build_classifier("uniform", 2, 8)
    engine = Engine(lambda e, b: None)
    TemperatureScheduleHandler(net, None).attach(engine)  # off: nothing attached
    TemperatureScheduleHandler(net, [1.0, 0.5], max_epochs=2).attach(engine)  # a sampler without temperature
    engine.run([0], max_epochs=2)
    for bad in ([1.0], [0.0, 1.0], "hot", [1.0, float("inf")]):
        with pytest.raises(ValueError, match="temperature_schedule"):
            TemperatureScheduleHandler(net, bad)
