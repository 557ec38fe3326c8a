"""unique_trackers merges duplicate MLflow handlers (built-in tracking + --tracking mlflow)."""

from __future__ import annotations

from monai.handlers import MLFlowHandler, StatsHandler
from monai.utils import path_to_sqlite_uri

from monai_das.handlers import unique_trackers


def test_merge(tmp_path):
    uri = path_to_sqlite_uri(tmp_path / "mlflow.db")
    mine = MLFlowHandler(tracking_uri=uri, experiment_name="e", run_name="r", artifacts=["a.png"])
    added = MLFlowHandler(tracking_uri=uri, experiment_name="e", run_name="r", artifacts="config.json")
    other_run = MLFlowHandler(tracking_uri=uri, experiment_name="e", run_name="r_eval")
    stats = StatsHandler()
    out = unique_trackers([mine, None, stats, added, other_run])
    assert out == [mine, stats, other_run]
    assert mine.artifacts == ("a.png", "config.json")
    assert unique_trackers(None) is None


def test_a_resumed_run_logs_each_epoch_once_and_no_temporary_files(tmp_path):
    """A training killed after its validation logged epoch 2 and before last.pt recorded it ran epoch 2 again when
    resumed, and MLflow held epoch 2's metrics twice; a figure being written was uploaded as its temporary file
    (trial T59b). A resumed handler logs what the run lacks; a temporary file of an atomic write is no artifact."""
    import mlflow
    from ignite.engine import Engine, Events

    from monai_das.handlers import ResumableMLFlowHandler

    uri = path_to_sqlite_uri(tmp_path / "mlflow.db")
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "kept_frames.png").write_bytes(b"png")
    (figures / ".kept_frames.ab12cd34.tmp.png").write_bytes(b"half")

    def train(epochs: range) -> None:
        trainer = Engine(lambda e, b: 0.5)
        handler = ResumableMLFlowHandler(tracking_uri=uri, experiment_name="e", run_name="r", iteration_log=False,
                                         epoch_log=True, output_transform=lambda out: out, artifacts=[str(figures)],
                                         close_on_complete=False)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update({"val_auc": e.state.epoch}))
        handler.attach(trainer)
        if epochs.start > 1:  # as a resume loads it: the epochs done, the epochs to reach
            trainer.state.epoch = trainer.state.iteration = epochs.start - 1
            trainer.state.max_epochs, trainer.state.epoch_length = epochs.stop - 1, 1
        trainer.run([0], max_epochs=epochs.stop - 1)

    train(range(1, 3))  # epochs 1-2 logged, then killed before last.pt recorded epoch 2
    train(range(2, 4))  # resumed from epoch 1's last.pt: epoch 2 again, then 3
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_auc")]
    assert sorted(history) == [(1, 1.0), (2, 2.0), (3, 3.0)]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "kept_frames.png" in artifacts and not any(".tmp." in a for a in artifacts)


def test_another_value_at_a_logged_step_is_logged(tmp_path):
    """Only a repeat (same key, step and value) is skipped: a killed evaluation leaves its MLflow run open, and the
    next evaluation of a retrained model into that run must log its own metrics (review of T59b's fix)."""
    import mlflow

    from monai_das.handlers import ResumableMLFlowHandler

    uri = path_to_sqlite_uri(tmp_path / "mlflow.db")
    for value in (0.7, 0.7, 0.9, float("nan"), float("nan")):
        handler = ResumableMLFlowHandler(tracking_uri=uri, experiment_name="e", run_name="r_eval",
                                         close_on_complete=False)
        handler._set_experiment()
        runs = handler.client.search_runs([handler.experiment.experiment_id])
        handler.cur_run = runs[0] if runs else handler.client.create_run(handler.experiment.experiment_id,
                                                                           run_name="r_eval")
        handler._log_metrics({"test_auc": value}, step=1)
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    values = [m.value for m in client.get_metric_history(run.info.run_id, "test_auc")]
    assert len(values) == 3 and values[:2] == [0.7, 0.9]


def test_a_training_logs_a_repeated_step_once_whatever_its_value(tmp_path, caplog):
    """Trial T68a: a training killed after epoch 4's metrics reached MLflow and resumed with --num_threads 2 logged
    val_loss at step 4 twice (0.5926030 and 0.5926038): with once_per_step (the bundles' training handlers) the first
    value stands and the repeat's is said."""
    import logging

    import mlflow

    from monai_das.handlers import ResumableMLFlowHandler

    uri = path_to_sqlite_uri(tmp_path / "mlflow.db")
    for attempt, value in enumerate((0.5926030, 0.5926038, 0.5926030)):
        handler = ResumableMLFlowHandler(tracking_uri=uri, experiment_name="e", run_name="r", once_per_step=True,
                                         close_on_complete=False)
        handler._set_experiment()
        runs = handler.client.search_runs([handler.experiment.experiment_id])
        handler.cur_run = runs[0] if runs else handler.client.create_run(handler.experiment.experiment_id,
                                                                           run_name="r")
        with caplog.at_level(logging.INFO, logger="monai_das.handlers.tracking"):
            handler._log_metrics({"val_loss": value, "val_auc": 0.75}, step=4)
            handler._log_metrics({"val_loss": 0.5 - attempt / 100}, step=5)
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss"))
    assert history == [(4, 0.592603), (5, 0.5)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_auc")] == [4]
    assert "step 4 already holds val_loss = 0.592603 (this repeat: 0.5926038) from the attempt that was stopped" in \
        caplog.text


def test_a_finished_training_resumed_with_nothing_left_makes_no_empty_run(tmp_path):
    """--resume True on a finished training (nothing left to train) added a second, empty FINISHED run of the same
    name (trial T62b); an unfinished run of that name (a kill after the last epoch, before MLflow closed it) is still
    taken and closed."""
    import mlflow
    from ignite.engine import Engine, Events

    from monai_das.handlers import ResumableMLFlowHandler

    uri = path_to_sqlite_uri(tmp_path / "mlflow.db")

    def train(resumed_done: bool, close: bool = True, stopped_early: bool = False) -> None:
        trainer = Engine(lambda e, b: 0.5)
        if resumed_done:  # what ResumeCheckpointLoader does at STARTED, before the tracker: every epoch done
            def load(e):
                e.state.epoch, e.state.iteration, e.state.max_epochs, e.state.epoch_length = 2, 2, 2, 1

            trainer.add_event_handler(Events.STARTED, load)
        if stopped_early:  # epoch 1 of 2 done, then early stopping (ResumableEarlyStopHandler stops it again)
            def load_stopped(e):
                e.state.epoch, e.state.iteration, e.state.max_epochs, e.state.epoch_length = 1, 1, 2, 1

            trainer.add_event_handler(Events.STARTED, load_stopped)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update({"val_auc": e.state.epoch}))
        ResumableMLFlowHandler(tracking_uri=uri, experiment_name="e", run_name="r", iteration_log=False,
                               epoch_log=True, output_transform=lambda out: out,
                               close_on_complete=close).attach(trainer)
        if stopped_early:  # registered after the tracker, as set_trainer does in the bundles' run step
            trainer.add_event_handler(Events.STARTED, lambda e: e.terminate())
        trainer.run([0], max_epochs=2)

    client = mlflow.MlflowClient(tracking_uri=uri)

    def runs():
        return client.search_runs([client.get_experiment_by_name("e").experiment_id])

    train(resumed_done=False)
    assert [r.info.status for r in runs()] == ["FINISHED"]
    train(resumed_done=True)
    assert [r.info.status for r in runs()] == ["FINISHED"]  # no second, empty run
    train(resumed_done=False, stopped_early=True)
    assert [r.info.status for r in runs()] == ["FINISHED"]  # nor after early stopping (review)
    client.set_terminated(runs()[0].info.run_id, "RUNNING")  # as a kill before MLflow closed it leaves it
    train(resumed_done=True)
    assert [r.info.status for r in runs()] == ["FINISHED"]  # taken and closed
    # a finished training trained longer: its new epochs in a second run of that name, as documented
    trainer = Engine(lambda e, b: 0.5)

    def longer(e):
        e.state.epoch, e.state.iteration, e.state.max_epochs, e.state.epoch_length = 2, 2, 3, 1

    trainer.add_event_handler(Events.STARTED, longer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update({"val_auc": e.state.epoch}))
    ResumableMLFlowHandler(tracking_uri=uri, experiment_name="e", run_name="r", iteration_log=False, epoch_log=True,
                           output_transform=lambda out: out).attach(trainer)
    trainer.run([0], max_epochs=3)
    assert len(runs()) == 2
    steps = sorted(m.step for r in runs() for m in client.get_metric_history(r.info.run_id, "val_auc"))
    assert steps == [1, 2, 3]  # epochs 1-2 in the first run, epoch 3 in the second


def test_a_resume_with_another_patience_or_more_epochs_goes_on(tmp_path, caplog):
    """A resume with another --patience (which the bundle allows) ended at start-up: MLflow refused to change the
    run's 'patience' parameter (trial T66c); a longer resumed run kept max_epochs 4 without a word. The run's
    parameters stay its first values; the resumed ones are its tags resumed.<name> (gone when a later resume gives
    the first value back); unchanged ones are not logged again, and the validator's handler, which logs its own
    engine's max_epochs 1 into the same run, changes nothing (review)."""
    import logging

    import mlflow
    from ignite.engine import Engine, Events

    from monai_das.handlers import ResumableMLFlowHandler

    uri = path_to_sqlite_uri(tmp_path / "mlflow.db")
    client = mlflow.MlflowClient(tracking_uri=uri)

    def train(done: int, max_epochs: int, patience: int) -> mlflow.entities.Run:
        trainer, validator = Engine(lambda e, b: 0.5), Engine(lambda e, b: 0.5)
        ResumableMLFlowHandler(tracking_uri=uri, experiment_name="e", run_name="r", iteration_log=False,
                               experiment_param={"patience": patience, "lr": 0.001},
                               close_on_complete=False).attach(trainer)
        ResumableMLFlowHandler(tracking_uri=uri, experiment_name="e", run_name="r", iteration_log=False,
                               epoch_log=False).attach(validator)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validator.run([0, 1, 2]))
        trainer.state.epoch = trainer.state.iteration = done  # as a resume loads it
        trainer.state.max_epochs, trainer.state.epoch_length = max(done, 1), 1
        trainer.run([0], max_epochs=max_epochs)
        (run,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
        return run

    def resumed(run) -> dict:
        return {k: v for k, v in run.data.tags.items() if k.startswith("resumed.")}

    assert resumed(train(0, 4, 5)) == {}
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.tracking"):
        run = train(2, 6, 3)
    assert run.data.params == {"patience": "5", "lr": "0.001", "max_epochs": "4", "epoch_length": "1"}
    assert resumed(run) == {"resumed.patience": "3", "resumed.max_epochs": "6"}
    assert "patience was 5 when the run started, now 3" in caplog.text and "lr was" not in caplog.text
    assert "now 1" not in caplog.text  # the validator's engine
    assert resumed(train(6, 7, 5)) == {"resumed.max_epochs": "7"}  # patience back to the run's own
