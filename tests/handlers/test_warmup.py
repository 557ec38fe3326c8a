"""Encoder warm-up on random subsets before the sampler learns, and early stopping that starts after it."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from monai_das.engines import sampler_warmup_epochs
from monai_das.handlers import ResumableEarlyStopHandler, SamplerWarmupHandler
from monai_das.networks import build_classifier


def test_warmup_epochs_auto_and_checks():
    assert [sampler_warmup_epochs("auto", n) for n in (2, 5, 15, 100)] == [0, 1, 3, 20]
    assert sampler_warmup_epochs(0, 15) == 0 and sampler_warmup_epochs(4, 15) == 4
    for bad in (-1, 1.5, "three", True):
        with pytest.raises(ValueError, match="sampler_warmup_epochs"):
            sampler_warmup_epochs(bad, 15)
    with pytest.raises(ValueError, match="leaves none of the max_epochs=15"):
        sampler_warmup_epochs(15, 15)
    # a validation must come after the warm-up (a warm-up model is never kept as the best one)
    assert sampler_warmup_epochs(3, 15, val_interval=5) == 3  # validations at 5, 10, 15
    with pytest.raises(ValueError, match="last validation is at epoch 10, not after the 10 warm-up epochs"):
        sampler_warmup_epochs(10, 14, val_interval=5)
    with pytest.raises(ValueError, match="last validation is at epoch none"):
        sampler_warmup_epochs("auto", 4, val_interval=5)
    with pytest.raises(ValueError, match="val_interval must be an integer >= 1"):
        sampler_warmup_epochs(0, 4, val_interval=0)


@pytest.mark.parametrize("method", ["das", "dps"])
def test_warmup_draws_random_subsets_without_sampler_gradient(method):
    torch.manual_seed(0)
    net = build_classifier(method, 2, 8).train()
    x = torch.rand(6, 1, 8, 16, 16)
    net.sampler.warming_up = True
    draws = {tuple(r.tolist()) for _ in range(5) for r in net.sample(x).indices}
    assert len(draws) > 5  # random subsets, different per input and per call
    torch.nn.functional.cross_entropy(net(x), torch.zeros(6, dtype=torch.long)).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.sampler.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder.parameters())
    net.eval()  # validation uses the sampler's own deterministic choice even while warming up
    with torch.no_grad():
        assert torch.equal(net.sample(x).indices, net.sample(x).indices)


def test_handler_switches_by_epoch_and_resets_at_the_end():
    net = build_classifier("das", 2, 8)
    seen = []
    trainer = Engine(lambda e, b: seen.append((e.state.epoch, net.sampler.warming_up)))
    SamplerWarmupHandler(net, epochs=2).attach(trainer)
    trainer.run([0], max_epochs=4)
    assert seen == [(1, True), (2, True), (3, False), (4, False)]
    assert net.sampler.warming_up is False
    with pytest.raises(ValueError):
        SamplerWarmupHandler(net, epochs=-1)
    # a fixed sampler is left alone
    uniform = build_classifier("uniform", 2, 8)
    other = Engine(lambda e, b: None)
    SamplerWarmupHandler(uniform, epochs=2).attach(other)
    other.run([0], max_epochs=1)
    assert uniform.sampler.warming_up is False


def test_a_run_resumed_right_after_the_warmup_says_it_is_done(caplog):
    """A run resumed at the first epoch after its warm-up (the sampler is not warming up when built) lacked the
    "sampler warm-up done" line of the uninterrupted run's log (trial T66c); said once in either."""
    import logging

    logs = []
    for done in (0, 2):  # uninterrupted; resumed after epoch 2 of a 2-epoch warm-up
        net = build_classifier("das", 2, 8)
        trainer = Engine(lambda e, b: None)
        SamplerWarmupHandler(net, epochs=2).attach(trainer)
        trainer.state.epoch = trainer.state.iteration = done
        trainer.state.max_epochs, trainer.state.epoch_length = max(done, 1), 1
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="monai_das.handlers.warmup"):
            trainer.run([0], max_epochs=4)
        logs.append([r.getMessage() for r in caplog.records if "warm-up done" in r.getMessage()])
    assert logs[0] == logs[1] == ["sampler warm-up done: from epoch 3 the sampler chooses and learns"]


def test_early_stopping_ignores_the_warmup_epochs():
    losses = iter([0.1, 0.2, 0.9, 0.8, 0.85, 0.9, 0.95])  # best during warm-up (epoch 1), worse afterwards
    trainer = Engine(lambda e, b: None)
    evaluator = Engine(lambda e, b: None)
    evaluator.state.metrics = {}

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _loss(engine):
        engine.state.metrics["val_loss"] = next(losses)

    stop = ResumableEarlyStopHandler(patience=2, score_function=lambda e: -e.state.metrics["val_loss"],
                                     epoch_level=True, start_epoch=2)
    stop.attach(evaluator)
    stop.set_trainer(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))
    trainer.run([0], max_epochs=7)
    # epochs 1-2 ignored; best 0.8 at epoch 4; 0.85 (5) and 0.9 (6) exhaust patience 2 -> stop after epoch 6
    assert trainer.state.epoch == 6
