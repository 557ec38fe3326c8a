"""TrainingSummaryHandler: logs the epoch the best-model saver kept (never a degenerate or warm-up one), also after a resume."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine, Events

from monai_das.handlers import AtomicCheckpointSaver, TrainingSummaryHandler


def _trainer_validating(aucs, degenerate=(), warmup=(), start_epoch=0, intervals=None, evenly=None, at_random=None):
    """A no-op trainer that runs a validator after every epoch; validator epoch ``e`` reports ``aucs[e - 1]``."""
    trainer = Engine(lambda e, b: None)
    validator = Engine(lambda e, b: None)

    @validator.on(Events.EPOCH_COMPLETED)
    def _metrics(e):
        epoch = trainer.state.epoch
        e.state.epoch = epoch  # as under ValidationHandler: the validator reports the trainer's epoch
        e.state.metrics = {"val_auc": aucs[epoch - 1], "val_evidence_kept": 0.1 * epoch}
        if intervals:
            e.state.metrics["val_auc_low"], e.state.metrics["val_auc_high"] = intervals[epoch - 1]
        if evenly:
            e.state.metrics["val_auc_evenly_spaced"] = evenly[epoch - 1]
        if at_random is not None:
            e.state.metrics["val_evidence_at_random"] = at_random
        e.state.degenerate_predictions = epoch in degenerate
        e.state.sampler_warming_up = epoch in warmup

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validator.run([0]))
    if start_epoch:
        trainer.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", start_epoch))
    return trainer, validator


def _saver(tmp_path, validator):
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": torch.nn.Linear(1, 1)}, save_key_metric=True,
                                  key_metric_name="val_auc", key_metric_filename="model.pt")
    saver.attach(validator)
    return saver


def test_best_epoch_is_the_saved_one_never_degenerate_or_warmup(tmp_path, caplog):
    # epoch 1 belongs to the warm-up, epoch 2 is "perfect" but its predictions did not vary: neither is kept
    trainer, validator = _trainer_validating([0.9, 1.0, 0.8], degenerate={2}, warmup={1})
    summary = TrainingSummaryHandler(_saver(tmp_path, validator), key_metric="val_auc")
    summary.attach(trainer)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.summary"):
        trainer.run([0], max_epochs=3)
    assert summary.best["epoch"] == 3 and summary.best["val_auc"] == pytest.approx(0.8)
    assert "best val_auc 0.800 at epoch 3 of 3 (val_evidence_kept 0.300)" in caplog.text


def test_after_resume_names_the_epoch_of_the_kept_file(tmp_path, caplog):
    trainer, validator = _trainer_validating([0.7, 0.9])
    first = _saver(tmp_path, validator)
    trainer.run([0], max_epochs=2)
    state = first.state_dict()  # what last.pt holds

    # the resumed process has no history of epochs 1-2; its epochs 3-4 are worse than epoch 2
    trainer2, validator2 = _trainer_validating([0.7, 0.9, 0.5, 0.6], start_epoch=2)
    resumed = _saver(tmp_path, validator2)
    resumed.load_state_dict(state)
    summary = TrainingSummaryHandler(resumed)
    summary.attach(trainer2)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.summary"):
        trainer2.run([0], max_epochs=4)
    assert "best val_auc 0.900 at epoch 2 of 4 (val_evidence_kept 0.200)" in caplog.text


@pytest.mark.parametrize("interval, warned", [((0.41, 0.97), True), ((0.62, 0.93), False)])
def test_shows_the_best_epochs_interval_and_warns_at_chance(tmp_path, caplog, interval, warned):
    """The best epoch's bootstrap interval (SelectionDiagnosticsHandler's auc_interval) is in the line; an interval
    reaching 0.5 (a validation list too small to tell the model from chance) is warned about."""
    trainer, validator = _trainer_validating([0.6, 0.8], intervals=[(0.1, 0.9), interval])
    TrainingSummaryHandler(_saver(tmp_path, validator)).attach(trainer)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.summary"):
        trainer.run([0], max_epochs=2)
    low, high = interval
    assert f"best val_auc 0.800 [95 % interval {low:.3f}, {high:.3f}] at epoch 2 of 2" in caplog.text
    assert ("cannot be told from chance" in caplog.text) == warned


@pytest.mark.parametrize("evenly, warned", [(0.9, True), (0.84, False)])
def test_warns_when_evenly_spaced_frames_beat_the_sampler(tmp_path, caplog, evenly, warned):
    trainer, validator = _trainer_validating([0.6, 0.8], evenly=[0.5, evenly])
    TrainingSummaryHandler(_saver(tmp_path, validator)).attach(trainer)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.summary"):
        trainer.run([0], max_epochs=2)
    line = f"best val_auc 0.800 at epoch 2 of 2 (val_evidence_kept 0.200); with evenly spaced frames instead: {evenly:.3f}"
    assert line in caplog.text
    assert ("does worse than evenly spaced frames" in caplog.text) == warned


@pytest.mark.parametrize("at_random, warned", [(0.2, True), (0.15, True), (0.1, False)])
def test_warns_when_the_kept_frames_hold_no_more_evidence_than_frames_at_random(tmp_path, caplog, at_random, warned):
    """Trial T56: a run ended 'val_evidence_kept 0.250' with k/T = 9/36 = 0.25, what random slices keep, without a
    word. The best epoch here keeps 0.2 of the evidence; at random (SelectionDiagnosticsHandler's
    val_evidence_at_random) 0.2 or 0.15 would keep about as much, 0.1 half of it."""
    trainer, validator = _trainer_validating([0.6, 0.8], intervals=[(0.6, 0.9)] * 2, at_random=at_random,
                                             evenly=[0.5, 0.7])
    TrainingSummaryHandler(_saver(tmp_path, validator)).attach(trainer)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.summary"):
        trainer.run([0], max_epochs=2)
    said = (f"the best epoch's kept frames hold 0.200 of the known evidence frames, hardly more than as many frames "
            f"taken at random would ({at_random:.3f})")
    assert (said in caplog.text) == warned
    # uniform or random (no evenly spaced AUC: not a learned sampler) keep k/T of the evidence by construction
    caplog.clear()
    trainer, validator = _trainer_validating([0.6, 0.8], intervals=[(0.6, 0.9)] * 2, at_random=at_random)
    TrainingSummaryHandler(_saver(tmp_path / "fixed", validator)).attach(trainer)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.summary"):
        trainer.run([0], max_epochs=2)
    assert "hardly more than" not in caplog.text


def test_warns_when_the_best_auc_has_no_interval(tmp_path, caplog):
    """Trial T56: 4 + 4 validation items gave no bootstrap interval, so 'best val_auc 0.562' ended training without
    the chance warning an interval would have brought."""
    trainer, validator = _trainer_validating([0.6, 0.562])
    TrainingSummaryHandler(_saver(tmp_path, validator)).attach(trainer)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.summary"):
        trainer.run([0], max_epochs=2)
    assert ("the best epoch's val_auc comes without a 95 % interval (the validation list holds fewer than 5"
            in caplog.text)
    caplog.clear()
    trainer, validator = _trainer_validating([0.6, 0.8], intervals=[(0.6, 0.9)] * 2)
    TrainingSummaryHandler(_saver(tmp_path / "b", validator)).attach(trainer)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.summary"):
        trainer.run([0], max_epochs=2)
    assert "without a 95 % interval" not in caplog.text


def test_no_usable_epoch(tmp_path, caplog):
    trainer, validator = _trainer_validating([float("nan")])
    TrainingSummaryHandler(_saver(tmp_path, validator)).attach(trainer)
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.summary"):
        trainer.run([0], max_epochs=1)
    assert "no validation epoch with a usable val_auc" in caplog.text
    # the file kept anyway is named for what it is (a warning before training had said none could be chosen)
    assert "the best-model file is epoch 1's, kept for lack of a score, not chosen by val_auc" in caplog.text
    # at WARNING: the model was chosen by nothing (an INFO line after a warning at the start went unseen, trial T57)
    assert [r.levelname for r in caplog.records if "no validation epoch" in r.getMessage()] == ["WARNING"]


def test_needs_a_best_model_saver(tmp_path):
    last_only = AtomicCheckpointSaver(str(tmp_path), {"model": torch.nn.Linear(1, 1)}, save_interval=1, n_saved=1)
    with pytest.raises(ValueError, match="best-model saver"):
        TrainingSummaryHandler(last_only)


def test_warns_when_the_reports_folder_describes_another_model(tmp_path, caplog):
    """A retrain into one bundle_root left the earlier model's eval/metrics.json, predictions and figures, naming the
    same checkpoint path, with no word (trial Z): the summary warns unless metrics.json records this model's digest."""
    import json

    from monai_das.utils import file_digest

    eval_dir, model = tmp_path / "eval", tmp_path / "models" / "model.pt"
    eval_dir.mkdir()
    trainer, validator = _trainer_validating([0.7, 0.9])
    summary = TrainingSummaryHandler(_saver(tmp_path / "models", validator), reports_dir=eval_dir)
    assert summary._stale_reports() is None  # no model file, no report: nothing to say
    summary.attach(trainer)
    (eval_dir / "metrics.json").write_text(json.dumps({"test_auc": 0.556, "checkpoint": str(model)}))
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.summary"):
        trainer.run([0], max_epochs=2)
    assert (f"'{eval_dir / 'metrics.json'}' (with their predictions and confusion matrices) describe another model "
            f"than this training's '{model}' (no checkpoint_sha256: an older version; this one "
            f"{file_digest(model)[:12]}...): evaluate it (evaluate.json) before reading them.") in caplog.text
    (eval_dir / "metrics.json").write_text(json.dumps({"checkpoint_sha256": "ab" * 32}))
    assert "(checkpoint sha256 abababababab...; this one" in summary._stale_reports()
    (eval_dir / "metrics.json").write_text(json.dumps({"checkpoint_sha256": file_digest(model)}))
    assert summary._stale_reports() is None  # evaluated: this model's reports
    # an external evaluation's or another k's reports in their folders (recheck R53: not said)
    (eval_dir / "site2.json-1a2b3c4d" / "k2").mkdir(parents=True)
    (eval_dir / "site2.json-1a2b3c4d" / "metrics.json").write_text(json.dumps({"checkpoint_sha256": "cd" * 32}))
    (eval_dir / "site2.json-1a2b3c4d" / "k2" / "metrics.json").write_text(json.dumps({"checkpoint_sha256": "cd" * 32}))
    assert summary._stale_reports().startswith(
        f"'{eval_dir / 'site2.json-1a2b3c4d' / 'metrics.json'}' and 1 other evaluation report(s) in '{eval_dir}'")
