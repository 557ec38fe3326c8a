"""
Ultrasound clips end to end through the video bundle: ``--dataset pocus`` (patient-level folds, clips decoded to
``num_frames×1×size×size`` and cached): train, evaluate, infer on video files.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from das_bundle_helpers import VIDEO_EVALUATE as EVALUATE
from das_bundle_helpers import VIDEO_INFERENCE as INFERENCE
from das_bundle_helpers import VIDEO_TRAIN as TRAIN
from das_bundle_helpers import run_cmd

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pocus(tmp_path_factory, shared_data):
    data = shared_data / "video" / "covid19_lus_pocus"
    if not (data / "MANIFEST.csv").is_file():
        pytest.skip(f"POCUS clips not found in {data}")
    root = tmp_path_factory.mktemp("das_pocus")
    common = ["--bundle_root", root, "--dataset", "pocus", "--data_dir", data, "--size", 32, "--num_frames", 8,
              "--fold", 1]
    train = run_cmd(TRAIN, args=[*common, "--max_epochs", 1, "--num_train", 8, "--num_val", 4, "--batch_size", 4,
                                 "--progress_bar", "False", "--num_figures", 2, "--precise_bn_batches", 2])
    return root, common, data, train.stdout


def test_train_and_evaluate(pocus):
    root, common, _, train_log = pocus
    assert "precise BN: BatchNorm statistics recomputed on 2 training batches after epoch 1" in train_log
    assert (root / "models" / "model.pt").is_file() and (root / "eval" / "figures" / "kept_frames.png").is_file()
    out = run_cmd(TRAIN, EVALUATE, args=[*common, "--num_test", 4, "--batch_size", 4])
    assert "evaluation on 4 samples" in out.stdout
    # a capped split (--num_test 4 of the whole test split): its reports beside the whole split's, the card untouched
    report = json.loads((root / "eval" / "n4" / "metrics.json").read_text())
    assert report["label_names"] == ["covid", "pneumonia", "healthy"] and len(report["confusion_matrix"]) == 3
    assert report["splits"]["dataset"] == "pocus" and {"fold", "num_folds", "probe", "seed"} <= set(report["splits"])
    assert 1 <= report["num_kept"] < report["num_frames"]


def test_inference_on_clips(pocus, tmp_path):
    root, common, data, _ = pocus
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(data / "convex" / "Reg_liftl_case3_clip2.mp4", clips / "a.mp4")  # 32 frames
    shutil.copy(data / "convex" / "Cov-Atlas+(45).gif", clips / "b.gif")  # 21 frames
    (clips / "c.avi").write_bytes(b"not a video")
    out = run_cmd(INFERENCE, args=[*common, "--input", clips, "--output_dir", tmp_path / "out"], check=False)
    assert out.returncode == 3 and "1 of 3 studies in " in out.stdout + out.stderr  # c.avi: an error row, status 3
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "out" / "predictions.csv"))}
    assert sorted(rows) == ["a.mp4", "b.gif", "c.avi"]
    assert "c.avi" in rows["c.avi"]["error"]
    for name, n_frames in (("a.mp4", 32), ("b.gif", 21)):
        r = rows[name]
        kept = [int(i) for i in r["kept_indices"].split(";")]
        src = [int(i) for i in r["source_frames"].split(";")]
        assert len(kept) == len(src) == 4 and kept == sorted(kept) and max(kept) < 8
        assert src == sorted(src) and 0 <= src[0] and src[-1] < n_frames  # frame numbers in the file
        assert r["pred_name"] in ("covid", "pneumonia", "healthy")


@pytest.mark.parametrize("dataset", ["pocus", "POCUS"])
def test_run_name_names_the_fold_whatever_the_dataset_case(tmp_path, dataset):
    """`--dataset POCUS` is accepted, and its five folds' MLflow runs all had one name (no `_fold<f>`)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(TRAIN))
    parser.update({"bundle_root": str(tmp_path), "dataset": dataset, "fold": 3})
    parser.get_parsed_content("imports")
    assert parser.get_parsed_content("run_name").endswith("_seed0_fold3")
