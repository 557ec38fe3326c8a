"""AtomicCheckpointSaver: atomic writes, in-place replacement, resumable best-model tracking."""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import time
from pathlib import Path

import pytest
import torch
from filelock import Timeout
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver

from engine_helpers import engine_with_metric

from monai_das.handlers import (
    AtomicCheckpointSaver,
    CheckedCheckpointLoader,
    ResumeCheckpointLoader,
    remove_stale_temp_files,
)
from monai_das.handlers.checkpoint import LOCK_NAME, OWNER_NAME


def _files(folder):
    """The folder's files but the run lock (kept, empty, hidden)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in (LOCK_NAME, OWNER_NAME))


def _engine_with_metric(values):
    return engine_with_metric("score", values)


def test_monai_saver_is_not_atomic_but_ours_is(tmp_path):
    """The reason for the subclass: MONAI's CheckpointSaver builds its DiskSaver with atomic=False."""
    net = torch.nn.Linear(2, 2)
    monai_saver = CheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_filename="m.pt")
    assert monai_saver._key_metric_checkpoint.save_handler._atomic is False
    ours = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_filename="m.pt",
                                 save_final=True, save_interval=1, interval_filename="last.pt")
    for ckpt in (ours._key_metric_checkpoint, ours._final_checkpoint, ours._interval_checkpoint):
        assert ckpt.save_handler._atomic is True


def test_numpy_scalars_in_a_checkpoint_are_saved_as_numbers(tmp_path):
    """A handler's state holding a NumPy scalar (a MONAI metric value) was saved as such, and the file then refused by
    every loader here (torch.load(weights_only=True)): saved as Python numbers."""
    import numpy as np

    from monai_das.handlers.checkpoint import AtomicDiskSaver

    AtomicDiskSaver(str(tmp_path), filename="last.pt")(
        {"stop": {"best_score": np.float64(0.75), "scores": [np.float32(0.5), (np.int64(3), 1.0)]}}, "x.pt")
    loaded = torch.load(tmp_path / "last.pt", weights_only=True)
    assert loaded == {"stop": {"best_score": 0.75, "scores": [0.5, (3, 1.0)]}} and type(loaded["stop"]["best_score"]) is float
    # a module's state_dict keeps its _metadata (module versions): the file is what torch.save makes of it
    from collections import defaultdict

    from monai_das.handlers.checkpoint import _numpy_scalars_plain

    net = torch.nn.BatchNorm1d(2)
    state = net.state_dict()
    assert _numpy_scalars_plain({"model": state})["model"] is state
    AtomicDiskSaver(str(tmp_path), filename="m.pt")({"model": state, "score": np.float64(1.0)}, "x.pt")
    assert torch.load(tmp_path / "m.pt", weights_only=True)["model"]._metadata == state._metadata
    counts = defaultdict(int, {"a": np.int64(2)})
    assert _numpy_scalars_plain(counts) == {"a": 2} and isinstance(_numpy_scalars_plain(counts), defaultdict)


def test_best_and_last_files(tmp_path):
    net = torch.nn.Linear(2, 2)
    engine = _engine_with_metric([0.5, float("nan"), 0.9, 0.7])
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="score",
                                  key_metric_filename="model.pt", save_interval=1, n_saved=1,
                                  interval_filename="last.pt")
    saver.attach(engine)
    scores = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: scores.append(saver.best_score))
    engine.run([0, 1], max_epochs=4)
    assert _files(tmp_path) == ["last.pt", "model.pt"]  # no temp files, no epoch names
    assert scores == [0.5, 0.5, 0.9, 0.9]  # NaN never wins, later real values still do
    state = saver.state_dict()
    assert state["_saved"][-1][0] == pytest.approx(0.9) and state["best_epoch"] == saver.best_epoch == 3
    sd = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(sd) == set(net.state_dict())


@pytest.mark.parametrize("greater_or_equal, best_epoch", [(False, 2), (True, 4)])
def test_tied_key_metric_keeps_the_earliest_unless_greater_or_equal(tmp_path, greater_or_equal, best_epoch):
    """The documented tie rule: a saturated key metric keeps its first epoch; MONAI's ``key_metric_greater_or_equal``
    keeps the latest instead, and the saver's own record (best epoch, its metrics) follows the file either way."""
    net = torch.nn.Linear(2, 2)
    engine = _engine_with_metric([0.5, 1.0, 0.9, 1.0, float("nan")])
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="score",
                                  key_metric_filename="model.pt", key_metric_greater_or_equal=greater_or_equal)
    saver.attach(engine)
    weights = {}
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: (net.weight.data.add_(1.0), weights.update(
        {e.state.epoch: net.weight.detach().clone()})))
    engine.run([0, 1], max_epochs=5)  # the NaN of epoch 5 never replaces the best
    assert saver.best_epoch == best_epoch and saver.best_score == 1.0
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], weights[best_epoch])


def test_nan_scores_never_tie_with_greater_or_equal(tmp_path):
    """A one-class validation list gives NaN AUCs: with key_metric_greater_or_equal the first NaN epoch is kept (no
    better one yet), later NaN epochs do not rewrite it, and a real score still beats it."""
    net = torch.nn.Linear(2, 2)
    engine = _engine_with_metric([float("nan"), float("nan"), 0.4, float("nan")])
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="score",
                                  key_metric_filename="model.pt", key_metric_greater_or_equal=True)
    saver.attach(engine)
    epochs = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epochs.append(saver.best_epoch))
    engine.run([0, 1], max_epochs=4)
    assert epochs == [1, 1, 3, 3]


def test_nan_first_score_does_not_block_later_ones(tmp_path):
    net = torch.nn.Linear(2, 2)
    engine = _engine_with_metric([float("nan"), 0.2])
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="score",
                                  key_metric_filename="model.pt")
    saver.attach(engine)
    engine.run([0], max_epochs=1)
    assert saver.best_score == -math.inf
    engine.run([0], max_epochs=2)
    assert saver.best_score == pytest.approx(0.2)


def test_failed_save_keeps_previous_file(tmp_path):
    """A save that fails half-way (here: an object that cannot be pickled) leaves the old file untouched."""
    net = torch.nn.Linear(2, 2)

    class Flaky:
        fail = False

        def state_dict(self):
            return {"x": (lambda: 0) if Flaky.fail else 1}

        def load_state_dict(self, sd):
            pass

    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net, "flaky": Flaky()}, save_interval=1, n_saved=1,
                                  interval_filename="last.pt")
    saver.attach(engine)
    engine.run([0], max_epochs=1)
    before = (tmp_path / "last.pt").read_bytes()
    Flaky.fail = True
    with pytest.raises(Exception):
        engine.run([0], max_epochs=2)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert _files(tmp_path) == ["last.pt"]  # the temporary file was removed


def test_full_disk_names_the_checkpoint_and_keeps_the_previous_one(tmp_path, monkeypatch):
    """torch.save on a full disk (or over ``ulimit -f``) raises "[enforce fail at inline_container.cc] unexpected
    pos" over the OSError: the saver's error names the file and the cause instead, and the old file stays (T70a)."""
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_interval=1, n_saved=1,
                                  interval_filename="last.pt")
    saver.attach(engine)
    engine.run([0], max_epochs=1)
    before = (tmp_path / "last.pt").read_bytes()

    def full_disk(obj, f, **kwargs):
        f.write(b"PK")  # the temporary file, half written
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 2")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"could not write the checkpoint '.*last\.pt': No space left on device \(a full"):
        engine.run([0], max_epochs=2)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert _files(tmp_path) == ["last.pt"]  # the temporary file was removed


def test_saver_state_round_trip_through_checkpoint_loader(tmp_path):
    net = torch.nn.Linear(2, 2)
    engine = _engine_with_metric([0.3, 0.8])
    best = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="score",
                                 key_metric_filename="model.pt")
    best.attach(engine)
    last = AtomicCheckpointSaver(str(tmp_path), {"model": net, "best": best}, save_interval=1, n_saved=1,
                                 interval_filename="last.pt")
    last.attach(engine)
    engine.run([0], max_epochs=2)

    fresh = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="score",
                                  key_metric_filename="model.pt")
    assert fresh.best_score is None
    engine2 = _engine_with_metric([0.0, 0.0, 0.5])
    CheckpointLoader(str(tmp_path / "last.pt"), {"model": net, "best": fresh}).attach(engine2)
    fresh.attach(engine2)
    engine2.run([0], max_epochs=1)
    # restored best (0.8, epoch 2) is not overwritten by the worse 0.0 of the new run
    assert fresh.best_score == pytest.approx(0.8) and fresh.best_epoch == 2
    assert fresh.best_metrics == pytest.approx({"score": 0.8})  # the kept epoch's metrics survive too
    assert not (tmp_path / "model.pt.previous").exists()  # model.pt is the restored run's own: left in place


def test_run_without_a_best_model_sets_aside_another_runs_file(tmp_path, caplog):
    """A run none of whose validations may be kept must not leave an earlier run's model.pt to be evaluated."""
    from monai_das.handlers import TrainingSummaryHandler
    from monai_das.handlers.diagnostics import DEGENERATE_ATTR

    (tmp_path / "model.pt").write_bytes(b"an earlier run's model")
    engine = _engine_with_metric([0.9, 0.95])
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: setattr(e.state, DEGENERATE_ATTR, True))
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": torch.nn.Linear(2, 2)}, save_key_metric=True,
                                  key_metric_name="score", key_metric_filename="model.pt")
    saver.attach(engine)
    engine.run([0], max_epochs=2)
    assert (tmp_path / "model.pt").read_bytes() == b"an earlier run's model"  # untouched while training runs
    with caplog.at_level("INFO"):
        TrainingSummaryHandler(saver)(engine)  # training ends: no best model kept
    assert _files(tmp_path) == ["model.pt.previous"]
    assert (tmp_path / "model.pt.previous").read_bytes() == b"an earlier run's model"
    assert "is not from this run" in caplog.text and "moved to 'model.pt.previous'" in caplog.text
    # a run that kept its own best model leaves it in place
    engine2 = _engine_with_metric([0.9])
    saver2 = AtomicCheckpointSaver(str(tmp_path), {"model": torch.nn.Linear(2, 2)}, save_key_metric=True,
                                   key_metric_name="score", key_metric_filename="model.pt")
    saver2.attach(engine2)
    engine2.run([0], max_epochs=1)
    TrainingSummaryHandler(saver2)(engine2)
    assert saver2.set_aside_unsaved() is None and (tmp_path / "model.pt").is_file()


def test_checkpoints_reach_the_disk_before_the_swap(tmp_path, monkeypatch):
    """Ignite's atomic save swapped in a file it had not flushed to the disk (nor the folder after): a power cut soon
    after could leave last.pt empty. The saver writes through atomic_file: the file flushed before the swap, the
    folder after."""
    import monai_das.utils.io as io
    from monai_das.handlers.checkpoint import AtomicDiskSaver

    flushed, fsync_path = [], io.fsync_path
    monkeypatch.setattr(io, "fsync_path", lambda p: (flushed.append((Path(p), (tmp_path / "last.pt").exists())),
                                                    fsync_path(p)))
    AtomicDiskSaver(str(tmp_path), filename="last.pt")({"w": torch.ones(2)}, "x.pt")
    assert [(p.name.endswith(".tmp.pt"), there) for p, there in flushed] == [(True, False), (False, True)]
    assert flushed[1][0] == tmp_path and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert torch.equal(torch.load(tmp_path / "last.pt", weights_only=True)["w"], torch.ones(2))


def test_stale_temp_files_removed_on_attach(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "tmpab_cd123").write_bytes(b"\0" * 64)  # left by a kill during an atomic save (ignite's name)
    (models / ".last.k2_8dmq1.tmp.pt").write_bytes(b"\0" * 64)  # a killed save a minute ago: this folder's own
    (models / "last.pt").write_bytes(b"keep")
    (models / "tmp_notes.txt").write_text("not ours")
    card_tmp, fresh = models / ".metadata.shusiavt.tmp.json", models / ".model.ab_cd123.tmp.onnx"
    card_tmp.write_text("{")  # a model card write killed an hour ago
    os.utime(card_tmp, (time.time() - 3600, time.time() - 3600))
    fresh.write_bytes(b"\0")  # an export in flight (another program): kept
    saver = AtomicCheckpointSaver(str(models), {"net": torch.nn.Linear(1, 1)}, save_interval=1, n_saved=1,
                                  interval_filename="last.pt")
    saver.attach(Engine(lambda e, b: None))
    assert sorted(p.name for p in models.iterdir()) == [fresh.name, LOCK_NAME, OWNER_NAME, "last.pt", "tmp_notes.txt"]
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_one_training_at_a_time_per_checkpoint_folder(tmp_path):
    """A second run into a folder another process trains into is refused before it touches anything (it would
    overwrite last.pt/model.pt and delete the other's in-flight temporary files as stale); the trainer lets go
    when its run completes. (flock: a lock taken through another open file is another process's, here too.)"""
    from filelock import FileLock

    other = FileLock(str(tmp_path / LOCK_NAME))
    other.acquire(timeout=0)  # another run trains here
    (tmp_path / OWNER_NAME).write_text("pid 4242 on host7, since 2026-12-04 10:00:00\n")
    (tmp_path / "tmpab_cd123").write_bytes(b"\0")  # its save in flight
    saver = AtomicCheckpointSaver(str(tmp_path), {"net": torch.nn.Linear(1, 1)}, save_interval=1, n_saved=1,
                                  interval_filename="last.pt")
    with pytest.raises(RuntimeError, match=r"another training run is writing its checkpoints to '.*' \(pid 4242 on host7, "
                                           r"since 2026-12-04 10:00:00\): wait for it"):
        saver.attach(Engine(lambda e, b: None))
    assert (tmp_path / "tmpab_cd123").exists()  # not deleted
    other.release()
    trainer = Engine(lambda e, b: None)
    saver.attach(trainer)
    AtomicCheckpointSaver(str(tmp_path), {"net": torch.nn.Linear(1, 1)}, save_key_metric=True,
                          key_metric_filename="model.pt").attach(Engine(lambda e, b: None))  # shares this run's lock
    with pytest.raises(Timeout):
        FileLock(str(tmp_path / LOCK_NAME)).acquire(timeout=0)  # held while the run goes on
    assert (tmp_path / OWNER_NAME).read_text().startswith(f"pid {os.getpid()} on ")
    trainer.run([0], max_epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the lock's file deleted, the stale temp too
    FileLock(str(tmp_path / LOCK_NAME)).acquire(timeout=0)  # free once it completed


_RANK_SCRIPT = """
import sys, torch.distributed as dist
from monai_das.handlers.checkpoint import hold_on_saving_rank
dist.init_process_group("gloo")
try:
    print("held", hold_on_saving_rank(sys.argv[1], sync_ranks=sys.argv[2] == "sync"))
except RuntimeError as e:
    print("refused", e)
dist.destroy_process_group()
"""


def test_every_rank_stops_when_the_saving_rank_is_refused(tmp_path):
    """Under torchrun, rank 0 refused a run into a folder another training held; rank 1 ran on into training and died
    in a gloo "connection closed by peer" error burying the reason (trial Z): every rank raises it. 2 gloo processes;
    the other training is this test process."""
    import socket
    import subprocess
    import sys

    from filelock import FileLock

    other = FileLock(str(tmp_path / LOCK_NAME))
    other.acquire(timeout=0)
    (tmp_path / OWNER_NAME).write_text("pid 4242 on host7, since 2026-12-04 10:00:00\n")

    def run(mode: str) -> list[str]:
        with socket.socket() as sock:  # a free port for each group
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        procs = [subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, str(tmp_path), mode], stdout=subprocess.PIPE,
                                  text=True, env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r),
                                                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
                 for r in range(2)]
        try:
            return [p.communicate(timeout=300)[0].strip().splitlines()[-1] for p in procs]
        finally:
            for p in procs:
                p.kill()

    refused = "another training run is writing its checkpoints to '" + str(tmp_path) + "' (pid 4242 on host7"
    out = run("sync")
    assert out[0].startswith("refused " + refused)
    assert out[1].startswith("refused rank 1: the saving rank 0 refused the run: LockedError: " + refused)
    # not synced (a saver attached on rank 0 alone, MONAI's tutorials): no collective call, only rank 0 refuses
    assert run("rank0") == ["refused " + out[0].removeprefix("refused "), "held False"]
    other.release()
    assert run("sync") == ["held True", "held False"]  # free: rank 0 holds it, rank 1 writes nothing


def test_engine_key_checkpoints_the_attached_engine(tmp_path, caplog):
    from monai_das.handlers import ResumeCheckpointLoader

    net = torch.nn.Linear(2, 2)
    trainer = Engine(lambda e, b: None)
    state = {"model": net}
    AtomicCheckpointSaver(str(tmp_path), state, save_interval=1, n_saved=1, interval_filename="last.pt",
                          engine_key="trainer").attach(trainer)
    trainer.run([0, 1], max_epochs=3)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == 6 and "model" in saved
    resumed = Engine(lambda e, b: None)
    ResumeCheckpointLoader(str(tmp_path / "last.pt"), {"model": torch.nn.Linear(2, 2)}).attach(resumed)
    epochs = []
    resumed.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    with caplog.at_level(logging.INFO, logger="monai_das.handlers.checkpoint"):
        resumed.run([0, 1], max_epochs=4)
    assert epochs == [4]  # continued after the 3 saved epochs
    assert "last.pt': 3 of 4 epochs done (iteration 6); training continues at epoch 4." in caplog.text


@pytest.mark.parametrize("loader", [CheckedCheckpointLoader, ResumeCheckpointLoader])
def test_loaders_name_a_truncated_checkpoint(tmp_path, loader):
    net, path = torch.nn.Linear(2, 2), tmp_path / "model.pt"
    torch.save({"model": net.state_dict()}, path)
    whole = path.read_bytes()
    engine = Engine(lambda e, b: None)
    kwargs = {"engine_key": None} if loader is ResumeCheckpointLoader else {}
    loader(str(path), {"model": net}, **kwargs).attach(engine)
    engine.run([0], max_epochs=1)  # a whole file loads
    path.write_bytes(whole[: len(whole) // 2])
    engine = Engine(lambda e, b: None)
    loader(str(path), {"model": net}, **kwargs).attach(engine)
    with pytest.raises(ValueError, match=rf"model\.pt \({len(whole) // 2} bytes\) is not a readable PyTorch"):
        engine.run([0], max_epochs=1)


class _Payload:
    """Runs code when unpickled (must never happen)."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("loader", [CheckedCheckpointLoader, ResumeCheckpointLoader])
def test_loaders_name_a_checkpoint_holding_objects(tmp_path, loader):
    """torch's bare UnpicklingError ('GLOBAL posix.system'), wrapped by the config's evaluator.run(), named no file."""
    net, path = torch.nn.Linear(2, 2), tmp_path / "model.pt"
    torch.save({"model": net.state_dict(), "extra": _Payload()}, path)
    engine = Engine(lambda e, b: None)
    kwargs = {"engine_key": None} if loader is ResumeCheckpointLoader else {}
    loader(str(path), {"model": net}, **kwargs).attach(engine)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} holds Python objects other than tensors"):
        engine.run([0], max_epochs=1)


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGXFSZ"), reason="a file size limit (ulimit -f) needs POSIX")
def test_a_real_file_size_limit_names_the_checkpoint(tmp_path):
    """A real write failure, not a mocked one: torch.save to a path writes in C++, whose error ("unexpected pos")
    carries no OSError, so atomic_file could not name the file or the cause (review R70g); written through a Python
    file, the EFBIG reaches it, as a full disk's ENOSPC does."""
    import resource

    from monai_das.handlers.checkpoint import AtomicDiskSaver

    saver = AtomicDiskSaver(str(tmp_path), filename="last.pt")
    saver({"w": torch.zeros(4)}, "x.pt")
    before = (tmp_path / "last.pt").read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))  # Python ignores SIGXFSZ: writes fail with EFBIG
    try:
        with pytest.raises(OSError, match=r"could not write the checkpoint '.*last\.pt': File too large \(a full"):
            saver({"w": torch.zeros(100_000)}, "x.pt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert (tmp_path / "last.pt").read_bytes() == before and _files(tmp_path) == ["last.pt"]
