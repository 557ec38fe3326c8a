"""PreciseBNHandler: BatchNorm statistics recomputed with the current weights, before validation."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from monai_das.handlers import PreciseBNHandler


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def _batches(n: int = 4) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.randn(8, 4, generator=g) * (i + 1) + i, "label": torch.zeros(8)} for i in range(n)]


def _expected(net: torch.nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        z = [net[0](b["image"]) for b in batches]
    mean = torch.stack([x.mean(0) for x in z]).mean(0)
    var = torch.stack([x.var(0, unbiased=True) for x in z]).mean(0)
    return mean, var


@pytest.mark.parametrize("num_batches", [2, 0])
def test_statistics_are_the_average_over_the_batches(num_batches):
    net, batches = _net(), _batches()
    net.eval()
    PreciseBNHandler(batches, net, num_batches=num_batches)()
    used = batches[:num_batches] if num_batches > 0 else batches
    mean, var = _expected(net, used)
    bn = net[1]
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    assert bn.momentum == 0.1 and not net.training  # momentum and mode restored


def test_each_submodule_keeps_its_mode():
    """update_bn sets the whole network's mode back: a BatchNorm layer frozen in eval mode inside a training network
    came out in training mode (R70b). Each submodule's own mode is restored; its statistics are recomputed (said)."""
    net, batches = _net(), _batches()
    net.train()
    net[1].eval()  # frozen by the caller
    PreciseBNHandler(batches, net, num_batches=2)()
    assert net.training and net[0].training and not net[1].training
    torch.testing.assert_close(net[1].running_mean, _expected(net, batches[:2])[0])


def test_runs_before_validation_at_epoch_end():
    net, batches = _net(), _batches()
    trainer = Engine(lambda e, b: None)
    PreciseBNHandler(batches, net, num_batches=3).attach(trainer)
    seen = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(net[1].running_mean.clone()))
    trainer.run(batches, max_epochs=2)
    mean, _ = _expected(net, batches[:3])
    assert len(seen) == 2 and all(torch.allclose(m, mean) for m in seen)


@pytest.mark.parametrize("interval", [1, 2])
def test_a_validation_handler_attached_first_still_validates_the_precise_statistics(interval):
    """MONAI users list ValidationHandler first in train_handlers: it validated, and chose the best checkpoint, with
    the lagging statistics, and the recomputed ones were never validated (trial T71e). Attaching moves it after."""
    from monai.engines import Evaluator
    from monai.handlers import ValidationHandler

    net, batches = _net(), _batches()
    seen = []
    evaluator = Evaluator(device="cpu", val_data_loader=batches, iteration_update=lambda e, b: None)
    evaluator.add_event_handler(Events.STARTED, lambda e: seen.append(net[1].running_mean.clone()))
    trainer = Engine(lambda e, b: None)
    ValidationHandler(interval, evaluator, epoch_level=True).attach(trainer)  # filtered (every=2) when interval 2
    PreciseBNHandler(batches, net, num_batches=3).attach(trainer)
    PreciseBNHandler(batches, net, num_batches=3).attach(trainer)  # another instance: attached, nothing moved twice
    trainer.run(batches, max_epochs=2)
    mean, _ = _expected(net, batches[:3])
    assert len(seen) == 2 // interval and all(torch.allclose(m, mean) for m in seen)


def test_sequence_batches_and_missing_key():
    net, batches = _net(), _batches(2)
    PreciseBNHandler([(b["image"], b["label"]) for b in batches], net)()
    torch.testing.assert_close(net[1].running_mean, _expected(net, batches)[0])
    with pytest.raises(KeyError, match="no key 'img'"):
        PreciseBNHandler(batches, net, image_key="img")()
