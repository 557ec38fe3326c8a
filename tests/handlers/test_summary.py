"""TrainingSummaryHandler: the best validation epoch, never a degenerate or warm-up one, logged when training completes."""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events

from monai_das.handlers import TrainingSummaryHandler


def test_best_epoch_skips_degenerate_and_warmup(caplog):
    aucs = [0.9, 1.0, 0.8]  # epoch 2 is "perfect" but its predictions did not vary
    validator = Engine(lambda e, b: None)

    @validator.on(Events.EPOCH_COMPLETED)
    def _metrics(e):
        epoch = trainer.state.epoch
        e.state.metrics = {"val_auc": aucs[epoch - 1], "val_evidence_kept": 0.1 * epoch}
        e.state.degenerate_predictions = epoch == 2
        e.state.sampler_warming_up = epoch == 1  # epoch 1 belongs to the warm-up: never the best either

    trainer = Engine(lambda e, b: None)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validator.run([0]))
    summary = TrainingSummaryHandler(validator, key_metric="val_auc")
    summary.attach(trainer)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.summary"):
        trainer.run([0], max_epochs=3)
    assert [h["epoch"] for h in summary.history] == [1, 2, 3]
    assert summary.best["epoch"] == 3 and summary.best["val_auc"] == 0.8
    assert "best val_auc 0.800 at epoch 3 of 3 (val_evidence_kept 0.300)" in caplog.text


def test_no_usable_epoch(caplog):
    validator = Engine(lambda e, b: None)
    validator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: setattr(e.state, "metrics", {"val_auc": float("nan")}))
    trainer = Engine(lambda e, b: None)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validator.run([0]))
    TrainingSummaryHandler(validator).attach(trainer)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.summary"):
        trainer.run([0], max_epochs=1)
    assert "no validation epoch with a usable val_auc" in caplog.text
