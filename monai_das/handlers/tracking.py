"""Experiment-tracking helpers for the bundle configs."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from monai.handlers import MLFlowHandler

__all__ = ["ResumableMLFlowHandler", "unique_trackers"]

logger = logging.getLogger(__name__)


def _target(h: MLFlowHandler) -> tuple:
    return (getattr(h.client, "tracking_uri", None), h.experiment_name, h.run_name)


def unique_trackers(handlers: Sequence[Any] | None) -> list[Any] | None:
    """
    ``handlers`` with repeated :class:`monai.handlers.MLFlowHandler` instances that log to the same store,
    experiment and run merged into the first one (the later ones' ``artifacts`` are added to it, then they are
    dropped). The bundle's configs track to MLflow by themselves; ``python -m monai.bundle run --tracking mlflow``
    appends MONAI's default handlers (pointing at the same ``tracking_uri``/``experiment_name``/``run_name`` keys),
    and without this every metric would be logged twice. Disabled (``None``) entries are dropped.
    """
    if handlers is None:
        return None
    out: list[Any] = []
    first: dict[tuple, MLFlowHandler] = {}
    for h in handlers:
        if h is None:
            continue
        if isinstance(h, MLFlowHandler):
            key = _target(h)
            if key in first:
                keep = first[key]
                keep.artifacts = tuple(dict.fromkeys([*keep.artifacts, *h.artifacts]))
                logger.info(f"merged a duplicate MLFlowHandler (experiment {h.experiment_name!r}) into the first one.")
                continue
            first[key] = h
        out.append(h)
    return out


class ResumableMLFlowHandler(MLFlowHandler):
    """
    MONAI's :class:`~monai.handlers.MLFlowHandler` (same arguments) for runs that resume: a metric already logged to
    the run at a step with the same value is not logged again (another value is: another model evaluated into a run
    left open by a killed evaluation). A training killed after its validation logged epoch ``e`` and before
    ``last.pt`` recorded it runs epoch ``e`` again when resumed (bit for bit the same), and MLflow's history held
    every metric of that epoch twice (trial T59b). With ``once_per_step`` (the bundles' training handlers when they
    resume: ``--resume true`` with a ``last.pt``) a step that holds a metric already is never logged again for it,
    whatever the value: the epoch a resume repeats is not bit for bit the same on a GPU's non-deterministic kernels
    or after ``--num_threads`` changed, and the history held both values (trial T68a); the first one stands, and the
    repeat's is said at INFO. A fresh training into an unfinished run of its name (MONAI takes that run) logs its own
    values. The run's history is read once, when the first metrics are logged. And an artifact folder's temporary
    files of an atomic write in flight or killed
    (:data:`~monai_das.utils.io.ATOMIC_TEMP_NAME`, e.g. ``.kept_frames.x1y2z3a4.tmp.png``) are not uploaded. A
    training resumed with nothing left to train (every epoch done, or stopped early) makes no new, empty run
    (:meth:`start`). A resumed run's parameters that the run holds already are not logged again, and one a resume
    may change (``patience``, ``max_epochs``: MLflow keeps a run's first value and refused the new one, which ended
    the resumed run at start-up, trial T66c) is recorded as the run's tag ``resumed.<name>`` (:meth:`_log_params`).
    """

    def __init__(self, *args: Any, once_per_step: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.once_per_step = bool(once_per_step)
        self._logged: tuple[str, dict] | None = None  # (run id, {(key, step): the values logged there, in order})
        self._deferred = False  # a resumed training's new run: made when its first epoch starts

    def attach(self, engine: Any) -> None:
        super().attach(engine)
        from ignite.engine import Events

        if not engine.has_event_handler(self._start_deferred, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self._start_deferred)

    def start(self, engine: Any) -> None:
        """MONAI's start, except for a resumed training (it starts past iteration 0) whose run of this name is
        finished: the new run MONAI would make (it never reopens a finished one) is made when an epoch starts, so
        that a resume with nothing left to train (every epoch done, or early stopping) makes no empty run; an
        unfinished run of that name (a kill, also after the last epoch) is taken at once and closed as MONAI does."""
        self._deferred = False
        if engine.state.iteration > 0 and not self.cur_run and self.run_name is not None:
            self._set_experiment()
            runs = self.client.search_runs(self.experiment.experiment_id) if self.experiment else []
            if not [r for r in runs if r.info.run_name == self.run_name and r.info.status != self.run_finish_status]:
                self._deferred = True
                return
        super().start(engine)

    def _start_deferred(self, engine: Any) -> None:
        if self._deferred:
            self._deferred = False
            super().start(engine)

    def _delete_exist_param_in_dict(self, param_dict: dict) -> None:
        """MONAI's (the engine's ``max_epochs``/``epoch_length`` a run holds already are not logged again), except
        that the training's handler (the one given ``experiment_param``) records a changed value, a longer resumed
        run's ``max_epochs``, as the tag ``resumed.<name>`` (a validator's handler logs its own engine's into the same
        run: not a change)."""
        if self.experiment_param and self.cur_run is not None:
            self._changed_params(param_dict)
        super()._delete_exist_param_in_dict(param_dict)

    def _log_params(self, params: dict[str, Any]) -> None:
        """MONAI's, for the parameters the run does not hold yet; one it holds with another value (a resume with
        another ``patience``) becomes the tag ``resumed.<name>`` (a run's parameter cannot change: MLflow refused it
        and the resumed run ended at start-up)."""
        if not self.cur_run or params is not self.experiment_param:
            return super()._log_params(params)
        held = self._changed_params(params)
        new = {k: v for k, v in params.items() if k not in held}
        if new:
            super()._log_params(new)

    def _changed_params(self, params: dict[str, Any]) -> dict[str, str]:
        """Record the values of ``params`` the current run holds with another value as its tags ``resumed.<name>``
        (said at INFO; a tag of a value back to the run's own is deleted); returns the run's parameters."""
        from mlflow.entities import RunTag
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        run = self.client.get_run(self.cur_run.info.run_id)
        held, tags = run.data.params, run.data.tags
        # a long value MLflow may have cut to its limit is the same value
        changed = {k: str(v) for k, v in params.items() if k in held and held[k] != str(v)
                   and not (len(str(v)) > MAX_PARAM_VAL_LENGTH and str(v).startswith(held[k]))}
        for k in params:
            if k in held and k not in changed and f"resumed.{k}" in tags:
                self.client.delete_tag(run.info.run_id, f"resumed.{k}")
        if changed:
            self.client.log_batch(run.info.run_id, tags=[RunTag(f"resumed.{k}", v[:MAX_PARAM_VAL_LENGTH])
                                                         for k, v in changed.items()])
            logger.info(f"MLflow run {run.info.run_id}: " + ", ".join(
                f"{k} was {held[k]} when the run started, now {v}" for k, v in changed.items())
                + " (a run's parameters cannot change: the new values are its tags resumed.<name>).")
        return held

    def _history(self, run_id: str) -> dict:
        data = self.client.get_run(run_id).data
        done: dict = {}
        for key in data.metrics:
            for m in self.client.get_metric_history(run_id, key):
                done.setdefault((key, m.step), []).append(_same(m.value))
        return done

    def _log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if not self.cur_run:
            return super()._log_metrics(metrics, step)
        from monai.utils import flatten_dict

        run_id = self.cur_run.info.run_id
        if self._logged is None or self._logged[0] != run_id:
            self._logged = (run_id, self._history(run_id))
        done, at = self._logged[1], step or 0
        flat = flatten_dict(metrics)
        held = {k: v for k, v in flat.items() if (k, at) in done}
        same = {k for k, v in held.items() if _same(v) in done[(k, at)]}
        other = {k: v for k, v in held.items() if k not in same} if self.once_per_step else {}
        new = {k: v for k, v in flat.items() if k not in same and k not in other}
        if same:
            logger.info(f"MLflow run {run_id}: step {at} already holds {len(same)} of these metrics with the same "
                        "values (a resumed run repeating it): not logged twice.")
        if other:
            logger.info(f"MLflow run {run_id}: step {at} already holds " + ", ".join(
                f"{k} = {done[(k, at)][0]} (this repeat: {_same(v)})" for k, v in other.items())
                + " from the attempt that was stopped; a resumed run repeating it is not bit for bit the same here "
                "(another thread count, a GPU's non-deterministic kernels): the first values stand.")
        if new:
            super()._log_metrics(new, step)
            for k, v in new.items():
                done.setdefault((k, at), []).append(_same(v))

    def _parse_artifacts(self) -> list:
        from monai_das.utils.io import ATOMIC_TEMP_NAME

        return [a for a in super()._parse_artifacts() if not ATOMIC_TEMP_NAME.fullmatch(os.path.basename(a))]


def _same(value: Any) -> float | str:
    """A metric value as MLflow stores it, comparable (NaN equal to NaN)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "nan" if v != v else v
