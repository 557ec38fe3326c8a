"""Checkpoints that are written atomically and can be resumed."""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import IgniteInfo, min_version, optional_import

from monai_das.handlers.diagnostics import not_best_reason
from monai_das.utils.io import (
    ATOMIC_TEMP_NAME, atomic_file, check_checkpoint, hold_lock, lock_holder, refused_objects, release_lock,
    remove_stale_atomic_files
)

DiskSaver, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "DiskSaver")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "AtomicDiskSaver",
    "AtomicCheckpointSaver",
    "CheckedCheckpointLoader",
    "ResumeCheckpointLoader",
    "remove_stale_temp_files",
    "hold_checkpoint_folder",
    "hold_on_saving_rank",
    "release_checkpoint_folder",
    "lock_owner",
]

logger = logging.getLogger(__name__)

#: names of the temporary files of an atomic save by ignite's ``DiskSaver`` (``tempfile.NamedTemporaryFile``), which
#: saved the checkpoints of versions before 0.6.29/0.6.31
_TEMP_NAME = re.compile(r"tmp[a-z0-9_]{8}")


def _is_checkpoint_temp(path: Path) -> bool:
    """A temporary file of :class:`AtomicDiskSaver` (:func:`~monai_das.utils.io.atomic_file`'s name with the ``.pt``
    suffix): only the run that holds the folder writes those there, so one found when a run starts is a killed save's,
    whatever its age."""
    return path.name.endswith(".pt") and ATOMIC_TEMP_NAME.fullmatch(path.name) is not None


#: the lock file that marks a checkpoint folder as in use by a training run (hidden; deleted when the run completes)
LOCK_NAME = ".monai_das_training.lock"
#: beside it: which process holds it (pid, host, start), named when another run is refused
OWNER_NAME = ".monai_das_training.owner"


def lock_owner(folder: str | os.PathLike) -> str:
    """Who holds (or held) the training lock of the checkpoint folder ``folder``, as its :data:`OWNER_NAME` file says
    (plain text: pid, host, start time; at most 200 characters), ``""`` when there is none."""
    return lock_holder(folder, OWNER_NAME)


def hold_checkpoint_folder(save_dir: str | Path) -> bool:
    """
    Lock the checkpoint folder ``save_dir`` for this process (an OS file lock, ``flock``/``LockFileEx`` through
    ``filelock``, on its :data:`LOCK_NAME`; the operating system lets go of it when the process ends, killed or not;
    :data:`OWNER_NAME` beside it says which process holds it). Two runs writing into one folder would overwrite each
    other's ``last.pt`` and ``model.pt``, and each would delete the other's in-flight temporary files as stale: the
    second run is refused, naming the folder and the holder. Returns ``True`` when this call took the lock,
    ``False`` when this process holds it already (several savers of one run, or a run in this process that stopped
    with an error: the same Python session). On a file system without OS file locks (some network mounts) the run
    goes on unlocked, with a warning.

    Raises:
        RuntimeError: another process holds the lock.
    """
    folder = Path(save_dir)
    return hold_lock(folder, LOCK_NAME, OWNER_NAME, what="training run", refusal=lambda owner: (
        f"another training run is writing its checkpoints to '{folder}'{f' ({owner})' if owner else ''}: wait for "
        "it to finish, or train this one into another folder (a bundle: another bundle_root or ckpt_dir). A Python "
        "session (e.g. a notebook) whose training stopped with an error holds the folder until the session ends."))


def hold_on_saving_rank(save_dir: str | Path, sync_ranks: bool = False) -> bool:
    """
    :func:`hold_checkpoint_folder` on the saving rank (0, the one that writes checkpoints; ``False`` on the others).
    With ``sync_ranks`` (a collective call: every rank of a distributed run must make it, as the bundles' savers
    attached on every rank do) its refusal is raised on every rank: the other ranks ran on into their first
    collective call and ended in a gloo/NCCL "connection closed by peer" error that buried the reason (trial Z).
    Without it only rank 0 raises (a saver attached on rank 0 alone, as in MONAI's tutorials).
    """
    error = None
    held = False
    if idist.get_rank() == 0:
        try:
            held = hold_checkpoint_folder(save_dir)
        except Exception as e:  # also an OSError of the folder: the other ranks must hear of it
            error = e
    if sync_ranks and idist.get_world_size() > 1:
        refused = idist.broadcast(f"{type(error).__name__}: {error}" if error is not None else "", src=0)
        if refused and error is None:
            raise RuntimeError(f"rank {idist.get_rank()}: the saving rank 0 refused the run: {refused}")
    if error is not None:
        raise error
    return held


def release_checkpoint_folder(save_dir: str | Path) -> None:
    """
    Let go of the lock :func:`hold_checkpoint_folder` took on ``save_dir`` (nothing when this process holds none) and
    delete its files, so a completed run leaves only its own files (a run that raised or was killed leaves the hidden
    files, which lock nothing once its process has ended). A run starting in the same instant could take the lock
    of the deleted file while a third one takes a new one: out of reach in practice, only the deletion allows it.
    """
    release_lock(save_dir, LOCK_NAME, OWNER_NAME)


def remove_stale_temp_files(save_dir: str | Path) -> list[Path]:
    """
    Delete the temporary files that an atomic save killed mid-write leaves in ``save_dir``: a checkpoint's
    (``.<name>.XXXXXXXX.tmp.pt``, or ``tmpXXXXXXXX`` from ignite's ``DiskSaver`` in earlier versions; up to a whole
    checkpoint each) and, untouched for 5 minutes, another :func:`~monai_das.utils.io.atomic_file` write's (the model
    card, an export). Call it before a run starts writing checkpoints there: no save is in flight then. Returns the
    deleted paths.
    """
    folder = Path(save_dir)
    removed = []
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.is_file() and (_TEMP_NAME.fullmatch(f.name) or _is_checkpoint_temp(f)):
                f.unlink(missing_ok=True)
                removed.append(f)
        # another program's atomic write may be in flight (an inference exporting models/model.onnx): only those
        # untouched for a while are stale
        removed = sorted(removed + remove_stale_atomic_files(folder))
    if removed:
        logger.warning(f"removed {len(removed)} temporary file(s) left in {folder} by an interrupted checkpoint save: "
                       + ", ".join(p.name for p in removed))
    return removed


def _numpy_scalars_plain(value: Any) -> Any:
    """``value`` with every NumPy scalar (``np.float64``, e.g. a MONAI metric a handler's state keeps) made a Python
    number, in dicts, lists and tuples: ``torch.load(weights_only=True)``, which reads every checkpoint here, refuses
    NumPy scalars, so such a file could not be resumed from. A container without one is returned as it is (a
    ``state_dict``'s ``_metadata``, its modules' versions, kept; the file's bytes as before); one with one is copied
    with its type and attributes."""
    import copy

    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        new = {k: _numpy_scalars_plain(v) for k, v in value.items()}
        if all(new[k] is v for k, v in value.items()):
            return value
        out = copy.copy(value)  # an OrderedDict keeps its _metadata, a defaultdict its factory
        for k, v in new.items():
            out[k] = v
        return out
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        items = [_numpy_scalars_plain(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    return value


class AtomicDiskSaver(DiskSaver):
    """
    Ignite ``DiskSaver`` whose saves go through :func:`~monai_das.utils.io.atomic_file` (``torch.save`` to a temporary
    file in the same folder, flushed to the disk, then ``os.replace``; the permissions of a plain new file),
    optionally to a fixed file name. Ignite's own ``atomic=True`` neither flushes the file to the disk before the
    swap nor the folder after it: a power cut soon after a save could leave ``last.pt`` empty.

    With a fixed ``filename`` the previous file is *not* deleted before the new one is written: ``os.replace``
    swaps it in one step, so a process killed at any moment leaves either the old or the new complete file.
    """

    def __init__(self, dirname: str, filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(dirname=dirname, atomic=True, create_dir=True, require_empty=False, **kwargs)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        import torch

        if self.save_on_rank != idist.get_rank():
            return
        # a full disk fails torch.save with "[enforce fail at inline_container.cc] unexpected pos ..." over the
        # OSError, which names neither the file nor the cause: atomic_file says both (trial T70a). Written through a
        # Python file, as ignite's DiskSaver did: to a path, torch's C++ writer loses the OSError (R70g)
        with atomic_file(self.dirname / (self.filename or filename), "the checkpoint", " (a training with --resume "
                         "True continues from its last complete checkpoint)") as tmp, open(tmp, "wb") as f:
            torch.save(_numpy_scalars_plain(checkpoint), f, **self.kwargs)

    def remove(self, filename: str) -> None:
        if self.filename is not None:  # replaced in place by the next save
            return
        path = self.dirname / filename
        if path.exists():
            super().remove(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """
    :class:`monai.handlers.CheckpointSaver` whose files are written atomically and whose best-model tracking survives
    a restart.

    MONAI's ``CheckpointSaver`` builds its ignite ``DiskSaver`` with ``atomic=False`` (and, for fixed file names,
    deletes the old file before writing the new one), so a kill during a save can leave a truncated or missing
    checkpoint. This subclass swaps in :class:`AtomicDiskSaver` for the final, key-metric and interval checkpoints.

    It also has ``state_dict()``/``load_state_dict()`` (the key-metric tracking list: ``(score, filename)`` of the
    best checkpoint so far), so it can itself be put in another checkpoint's ``save_dict`` and restored by
    ``CheckpointLoader``: after a resume, a worse model does not overwrite the best one. When attached it locks
    ``save_dir`` for this process (:func:`hold_checkpoint_folder`: a second run into the same folder is refused;
    the trainer's saver lets go when its run completes) and deletes the temporary files a kill during an
    earlier save left there (:func:`remove_stale_temp_files`). A key metric that is NaN
    (e.g. AUC on a validation set with one class) scores ``-inf`` so that any later real value beats it. An epoch that
    :func:`~monai_das.handlers.diagnostics.not_best_reason` vetoes (predictions that do not vary across items, a learned
    sampler still in its warm-up; flagged by :class:`~monai_das.handlers.SelectionDiagnosticsHandler`) is never saved
    as the best model.

    Args:
        save_dir, save_dict, kwargs: as :class:`monai.handlers.CheckpointSaver`.
        engine_key: when given, the engine this handler is attached to is added to ``save_dict`` under this key
            at ``attach`` time, so a saver in the trainer's own handler list can checkpoint the trainer (a config
            cannot refer to the trainer from inside its handler list without a cycle).
        interval_filename: fixed file name for the interval checkpoint (e.g. ``"last.pt"`` with ``save_interval=1``
            and ``n_saved=1``: a "last" checkpoint replaced in place every epoch). ``None`` keeps MONAI's
            ``checkpoint_epoch=N.pt`` names.
        sync_ranks: every rank of a distributed run attaches this saver (the bundles' configs): a refusal of
            ``save_dir`` by rank 0 (another training holds it) is raised on every rank (:func:`hold_on_saving_rank`,
            a collective call at ``attach``). Leave ``False`` when only rank 0 attaches it.
    """

    def __init__(self, save_dir: str, save_dict: dict, interval_filename: str | None = None,
                 engine_key: str | None = None, sync_ranks: bool = False, **kwargs: Any) -> None:
        super().__init__(save_dir=save_dir, save_dict=save_dict, **kwargs)
        self.engine_key = engine_key
        self.sync_ranks = bool(sync_ranks)
        #: evaluator epoch (the trainer's, under ``ValidationHandler``) of the best model saved so far
        self.best_epoch: int | None = None
        #: the evaluator's numeric metrics at that epoch
        self.best_metrics: dict[str, float] = {}
        for ckpt, fixed in (
            (self._final_checkpoint, kwargs.get("final_filename")),
            (self._key_metric_checkpoint, kwargs.get("key_metric_filename")),
            (self._interval_checkpoint, interval_filename),
        ):
            if ckpt is not None:
                ckpt.save_handler = AtomicDiskSaver(save_dir, filename=fixed)
        if self._key_metric_checkpoint is not None:
            score_fn = self._key_metric_checkpoint.score_function

            def _nan_safe_score(engine: Any) -> float:
                score = float(score_fn(engine))  # plain float: checkpoints load with weights_only=True
                return -math.inf if math.isnan(score) else score

            self._key_metric_checkpoint.score_function = _nan_safe_score

    def attach(self, engine: Any) -> None:
        if self.engine_key:  # the engine's own state (epoch, iteration) goes in too: see ``engine_key``
            self.save_dict[self.engine_key] = engine
        first = hold_on_saving_rank(self.save_dir, self.sync_ranks)
        if first:  # no other run writes here now: what a save left in the folder is stale
            remove_stale_temp_files(self.save_dir)
        super().attach(engine)
        from monai.engines import Evaluator

        # the trainer lets go after this saver's final save (COMPLETED also follows an early stop; an evaluator
        # completes at every validation); a run that raises keeps the folder until its process ends
        if idist.get_rank() == 0 and not isinstance(engine, Evaluator):
            engine.add_event_handler(Events.COMPLETED, lambda _: release_checkpoint_folder(self.save_dir))

    def best_model_path(self) -> Path | None:
        """The best-model file (``save_dir/<key_metric_filename>``), ``None`` without a fixed key-metric file name."""
        name = getattr(getattr(self._key_metric_checkpoint, "save_handler", None), "filename", None)
        return Path(self.save_dir) / name if name else None

    def set_aside_unsaved(self) -> Path | None:
        """
        When this run has saved no best model (its record, restored on resume, is empty) yet ``save_dir`` holds a
        file of the key-metric name, that file is another run's (an earlier training into the same folder): rename
        it ``<name>.previous`` so that evaluation never takes it for this run's model. Called when training ends
        (:class:`~monai_das.handlers.TrainingSummaryHandler`); returns the new path, or ``None`` when nothing moved.
        """
        ckpt = self._key_metric_checkpoint
        path = self.best_model_path()
        if path is None or ckpt._saved or idist.get_rank() != 0 or not path.is_file():
            return None
        previous = path.with_name(path.name + ".previous")
        path.replace(previous)
        logger.warning(f"'{path}' is not from this run (it kept no best model): moved to '{previous.name}' so that it "
                       "is never evaluated as this run's model.")
        return previous

    def metrics_completed(self, engine: Any) -> None:
        reason = not_best_reason(engine.state)  # set by SelectionDiagnosticsHandler
        if reason is not None:
            # MONAI's evaluator logged "Got new best metric" before the veto: said to be withdrawn (trial T63a)
            self.logger.info(f"epoch {engine.state.epoch}: {reason}; not saved as the best model (a 'Got new best "
                             "metric' line above for this epoch does not count).")
            return
        saved = self._key_metric_checkpoint._saved if self._key_metric_checkpoint is not None else []
        if saved and self._key_metric_checkpoint.score_function(engine) == -math.inf:
            return  # a NaN key metric never replaces a saved best (with key_metric_greater_or_equal it would tie)
        before = saved[-1] if saved else None
        super().metrics_completed(engine)
        if saved and saved[-1] is not before:  # a new best model was written
            self.best_epoch = int(engine.state.epoch)
            self.best_metrics = {k: float(v) for k, v in engine.state.metrics.items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def state_dict(self) -> dict:
        """Key-metric tracking list, epoch and metrics of the best model (empty when ``save_key_metric`` is off)."""
        if self._key_metric_checkpoint is None:
            return {}
        return {**self._key_metric_checkpoint.state_dict(), "best_epoch": self.best_epoch,
                "best_metrics": dict(self.best_metrics)}

    def load_state_dict(self, state_dict: Mapping) -> None:
        if self._key_metric_checkpoint is not None and state_dict:
            self._key_metric_checkpoint.load_state_dict(state_dict)
            epoch = state_dict.get("best_epoch")
            self.best_epoch = None if epoch is None else int(epoch)
            self.best_metrics = {str(k): float(v) for k, v in (state_dict.get("best_metrics") or {}).items()}

    @property
    def best_score(self) -> float | None:
        """Score of the best checkpoint saved so far (``None`` before the first one)."""
        saved = self._key_metric_checkpoint._saved if self._key_metric_checkpoint is not None else []
        return float(saved[-1].priority) if saved else None


class CheckedCheckpointLoader(CheckpointLoader):
    """
    :class:`monai.handlers.CheckpointLoader` (``weights_only=True``) that first checks the file is a whole
    ``torch.save`` archive (:func:`monai_das.utils.io.check_checkpoint`), so a truncated or corrupt model file stops
    the run with an error naming the file, not ``Invalid argument`` from inside ``torch.load``.
    """

    def __call__(self, engine: Any) -> None:
        check_checkpoint(self.load_path)
        try:
            super().__call__(engine)
        except pickle.UnpicklingError as e:  # weights_only=True refused an object: name the file, as read_checkpoint
            raise refused_objects(self.load_path, e) from e


class ResumeCheckpointLoader(CheckedCheckpointLoader):
    """
    :class:`monai.handlers.CheckpointLoader` that also restores the engine it is attached to, under ``engine_key``
    of ``load_dict`` (added at ``attach`` time, as :class:`AtomicCheckpointSaver` does with ``engine_key``), so both
    can sit in the trainer's handler list as in the model-zoo bundles.

    Args:
        load_path, load_dict, kwargs: as :class:`monai.handlers.CheckpointLoader` (the file checked as by
            :class:`CheckedCheckpointLoader`).
        engine_key: key of the attached engine in ``load_dict`` (``None``: the engine is not restored).
    """

    def __init__(self, load_path: str, load_dict: dict, engine_key: str | None = "trainer", **kwargs: Any) -> None:
        super().__init__(load_path=load_path, load_dict=load_dict, **kwargs)
        self.engine_key = engine_key

    def attach(self, engine: Any) -> None:
        if self.engine_key:
            self.load_dict[self.engine_key] = engine
        super().attach(engine)

    def __call__(self, engine: Any) -> None:
        super().__call__(engine)
        if self.engine_key and idist.get_rank() == 0:  # ignite's "resuming from ... epoch 0" precedes the loading
            done, total = engine.state.epoch, engine.state.max_epochs
            rest = (f"training continues at epoch {done + 1}" if total is None or done < total
                    else "nothing is left to train")
            logger.info(
                f"resumed from '{self.load_path}': {done} of {total} epochs done (iteration {engine.state.iteration}); "
                f"{rest}."
            )

