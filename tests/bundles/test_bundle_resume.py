"""
Resume through the bundle CLI: a run SIGKILLed after epoch 2 of 4 and resumed ends with the same weights, bit for bit,
as the run that was never interrupted (random states in ``last.pt``, training augmentation included); temporary
files of an interrupted save are cleaned; a resume under other settings or another training recipe is refused
naming both values; an override
typo is refused with the closest key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from das_bundle_helpers import TRAIN, run_cmd

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
ARGS = ["--num_train", "32", "--num_val", "16", "--batch_size", "16", "--progress_bar", "False", "--num_figures", "0",
        "--mlflow", "false", "--max_epochs", "4", "--num_threads", "1",
        # random augmentation in the main process: its generators must be restored too, the flip's own, the ones
        # RandAffined draws from (its array twin RandAffine and that one's RandAffineGrid) and the bundles' own
        # RandFrameAffined's (and its array twin's)
        "--train#random_transforms", "[{'_target_': 'RandFlipd', 'keys': 'image', 'prob': 0.5, 'spatial_axis': 1}, "
        "{'_target_': 'RandAffined', 'keys': 'image', 'prob': 0.5, 'rotate_range': [0.26, 0, 0], "
        "'scale_range': [0, 0.1, 0.1]}, {'_target_': 'monai_das.transforms.RandFrameAffined', 'keys': 'image', "
        "'prob': 0.5, 'rotate_range': 0.26, 'scale_range': 0.1, 'frame_axis': 0}]"]


def _kill_config(tmp_path: Path, epoch: int) -> str:
    """An extra config whose ``run`` attaches a SIGKILL at the end of ``epoch``, after the trainer's own handlers (the
    ``last.pt`` saver is the last of them)."""
    cfg = {"run": [
        "$import das_kill_after",
        "$@validate#early_stop.set_trainer(trainer=@train#trainer)",
        f"$das_kill_after.attach(@train#trainer, {epoch})",
        "$@train#trainer.run()",
    ]}
    path = tmp_path / "kill_after.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def _last(root: Path) -> dict:
    return torch.load(root / "models" / "last.pt", weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    whole, killed = tmp / "whole", tmp / "killed"
    # uninterrupted; --resume true on an empty folder starts from scratch and says so
    first = run_cmd(TRAIN, args=[*ARGS, "--bundle_root", whole, "--resume", "true"])
    out = run_cmd(TRAIN, _kill_config(tmp, 2), args=[*ARGS, "--bundle_root", killed], check=False,
                  extra_env={"PYTHONPATH": str(HERE)})
    assert out.returncode == -9, f"expected SIGKILL, got {out.returncode}:\n{(out.stdout + out.stderr)[-3000:]}"
    assert _last(killed)["trainer"]["iteration"] == 4  # 2 epochs of 2 iterations
    stale = killed / "models" / "tmpab12cd34"  # what a kill during an atomic save leaves behind
    stale.write_bytes(b"\0" * 1024)
    resumed = run_cmd(TRAIN, args=[*ARGS, "--bundle_root", killed, "--resume", "true"])
    return {"whole": whole, "killed": killed, "stale": stale, "first_log": first.stdout + first.stderr,
            "resumed_log": resumed.stdout + resumed.stderr}


def test_resumed_run_equals_uninterrupted_bit_for_bit(runs):
    a, b = _last(runs["whole"]), _last(runs["killed"])
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == 8
    assert "resuming from" in runs["resumed_log"] and "Epoch[1]" not in runs["resumed_log"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"weights differ after resume: {k}"
    assert a["early_stop"] == b["early_stop"] and a["validator_state"] == b["validator_state"]
    assert torch.equal(a["random_states"]["torch"], b["random_states"]["torch"])
    # the summary names the epoch of the kept model.pt, also when the best epoch came before the restart
    assert a["best_checkpoint"] == b["best_checkpoint"] and a["best_checkpoint"]["best_metrics"]
    done = [re.search(r"training done: .*", runs[k]).group(0) for k in ("first_log", "resumed_log")]
    assert done[0] == done[1], done


def test_resume_without_checkpoint_says_so(runs):
    assert "resume requested but there is no checkpoint" in runs["first_log"]


def test_stale_temp_checkpoint_removed(runs):
    assert not runs["stale"].exists()
    assert "interrupted checkpoint save" in runs["resumed_log"]
    assert sorted(p.name for p in (runs["killed"] / "models").iterdir()) == ["last.pt", "metadata.json", "model.pt"]


def test_checkpoint_records_settings(runs):
    settings = _last(runs["whole"])["settings"]
    assert settings["method"] == "das" and settings["keep_ratio"] == 0.5 and settings["num_frames"] == 28
    assert settings["num_classes"] == 2 and len(settings["label_names"]) == 2
    assert settings["lr"] == 0.001 and settings["batch_size"] == 16 and settings["relevance_weight"] == 0.0


def test_resume_under_other_method_or_recipe_refused(runs):
    # another method, another learning rate (the optimizer state would bring back the old one unannounced), more
    # epochs whose "auto" sampler warm-up resolves to another count (training longer is allowed, a warm-up that
    # moves mid-run is not), and another validation split (the data facts are recorded as one tag)
    out = run_cmd(TRAIN, args=[*ARGS, "--bundle_root", runs["killed"], "--resume", "true", "--method", "dps",
                               "--max_epochs", "5", "--lr", "0.0005", "--val_fraction", "0.3"], check=False)
    log = out.stdout + out.stderr
    assert out.returncode != 0
    for diff in ("method: checkpoint 'das', this run 'dps'", "lr: checkpoint 0.001, this run 0.0005",
                 "warmup_epochs: checkpoint 0, this run 1", "data.val_fraction: checkpoint 0.2, this run 0.3"):
        assert diff in log, (diff, log[-3000:])
    # refused in `initialize`, before the training data is cached and the engine runs (a changed datalist was
    # refused by the checkpoint's loading, after caching, in the engine's traceback; trial T63a)
    # (a refusal prints where it was raised, not the traceback: trial T69a)
    assert "Engine run is terminating" not in log and re.search(r"monai_das: refused at monai_das[/\\]handlers[/\\]"
                                                                 r"resume\.py:\d+", log), log[-3000:]


def test_override_typo_refused(tmp_path):
    out = run_cmd(TRAIN, args=[*ARGS, "--bundle_root", tmp_path, "--max_epoch", "1"], check=False)
    log = out.stdout + out.stderr
    assert out.returncode != 0 and "did you mean --max_epochs?" in log, log[-3000:]
    assert not (tmp_path / "models" / "last.pt").exists()  # refused before any training
