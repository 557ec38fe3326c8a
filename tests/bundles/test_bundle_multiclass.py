"""
A MedMNIST3D set with many classes through the bundle, in-process: OrganMNIST3D's 11 classes (only VesselMNIST3D, 2
classes, is in the shared data). A small stand-in file in the official layout (``{split}_images`` uint8
``N×28×28×28``, ``{split}_labels`` ``N×1``) is accepted as the release by patching the MD5 check alone; DAS trains one epoch, then
``evaluate.json`` scores the test split. Checks the class names (medmnist's), the 11-class model card, confusion matrix
and metrics, the macro AUC with its bootstrap interval, and the validation AUC interval of the model card.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from monai.bundle import run

from das_bundle_helpers import EVALUATE, META, TRAIN

pytestmark = pytest.mark.slow

NAME, CLASSES = "organmnist3d", 11


def _organ_file(folder, per_class={"train": 4, "val": 5, "test": 3}, seed=0, val_classes=CLASSES):
    """Every class in every split (the validation split: the first ``val_classes``); class c is a bright cube whose
    side grows with c, at a random place."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in per_class.items():
        labels = np.repeat(np.arange(val_classes if split == "val" else CLASSES), n)
        images = rng.integers(0, 40, size=(len(labels), 28, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            side = 3 + c
            z, y, x = rng.integers(0, 28 - side, size=3)
            images[i, z:z + side, y:y + side, x:x + side] = 220
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None].astype(np.uint8)
    np.savez_compressed(folder / f"{NAME}.npz", **arrays)


def test_eleven_classes_train_and_evaluate(tmp_path, monkeypatch):
    from monai_das.data import medmnist3d

    data = tmp_path / "data"
    data.mkdir()
    _organ_file(data)
    official = medmnist3d.medmnist_info(NAME)
    monkeypatch.setattr(medmnist3d, "_file_md5", lambda path: official["MD5"])  # the stand-in passes as the release
    common = dict(meta_file=META, logging_file=False, bundle_root=str(tmp_path / "run"), method="das",
                  dataset=NAME, data_dir=str(data), mlflow=False, progress_bar=False, num_figures=2)
    run(config_file=TRAIN, max_epochs=2, sampler_warmup_epochs=1, batch_size=11, **common)
    card = json.loads((tmp_path / "run" / "models" / "metadata.json").read_text())
    names = [official["label"][str(i)] for i in range(CLASSES)]
    assert card["das_model"]["num_classes"] == CLASSES and card["das_model"]["label_names"] == names
    val = card["eval_metrics"]
    assert 0.0 <= val["val_auc_low"] <= val["val_auc"] <= val["val_auc_high"] <= 1.0
    assert 0.0 <= val["val_auc_evenly_spaced"] <= 1.0  # the same network on evenly spaced slices

    run(config_file=[TRAIN, EVALUATE], **common)
    report = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    matrix = np.asarray(report["confusion_matrix"])
    assert report["label_names"] == names and matrix.shape == (CLASSES, CLASSES)
    assert matrix.sum() == 3 * CLASSES and (matrix.sum(1) == 3).all()  # every test volume once, by its true class
    assert 0.0 <= report["metrics"]["auc"] <= 1.0
    assert "intervals" not in report  # 3 test volumes a class: too few for a bootstrap interval (a warning says so)
    assert 0.0 <= report["metrics"]["auc_evenly_spaced"] <= 1.0
    positions = json.loads((tmp_path / "run" / "eval" / "test_kept_positions.json").read_text())
    assert sorted(positions["kept_fraction"]) == sorted(["all", *names])
    # evaluated with another temporal head than trained: evaluate.json's card check (initialize, before the data are
    # read and the weights load, which would fail with a state-dict error) refuses it naming the option
    (tmp_path / "run" / "eval" / "metrics.json").unlink()
    with pytest.raises(RuntimeError) as refused:  # MONAI's "Failed to evaluate ConfigExpression", from the check's
        run(config_file=[TRAIN, EVALUATE], temporal_head="attention", **common)
    cause = refused.value.__cause__
    assert isinstance(cause, ValueError) and "temporal_head: trained 'mean', this run 'attention'" in str(cause)
    assert "--temporal_head mean" in str(cause)
    assert not (tmp_path / "run" / "eval" / "metrics.json").exists()


def test_a_class_missing_from_validation_leaves_the_others_auc(tmp_path, monkeypatch, caplog):
    """No validation volume of the last class: MONAI's macro ROCAUC was NaN in every epoch and the best model the
    first epoch's (trial T61a); the key metric now averages the ten classes present, and says so."""
    from monai_das.data import medmnist3d

    data = tmp_path / "data"
    data.mkdir()
    _organ_file(data, per_class={"train": 2, "val": 2, "test": 1}, val_classes=CLASSES - 1)
    monkeypatch.setattr(medmnist3d, "_file_md5", lambda path: medmnist3d.medmnist_info(NAME)["MD5"])
    run(config_file=TRAIN, meta_file=META, logging_file=False, bundle_root=str(tmp_path / "run"), method="dps",
        dataset=NAME, data_dir=str(data), mlflow=False, progress_bar=False, num_figures=0, max_epochs=1,
        batch_size=11)
    val = json.loads((tmp_path / "run" / "models" / "metadata.json").read_text())["eval_metrics"]
    assert 0.0 <= val["val_auc"] <= 1.0 and "val_auc_low" not in val
    assert 0.0 <= val["val_auc_evenly_spaced"] <= 1.0  # the same classes, on evenly spaced slices (review)
    assert "the validation AUC averages the other classes" in caplog.text
