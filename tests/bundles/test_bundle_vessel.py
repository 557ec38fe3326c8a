"""
Round trip through the bundle CLI on the real VesselMNIST3D files with a baseline (uniform sampler): train one
tiny epoch, evaluate on part of the test split, infer on MedMNIST items, export to TorchScript.
"""

from __future__ import annotations

import csv
import json
import sys

import pytest
import torch

from das_bundle_helpers import EVALUATE, INFERENCE, META, TRAIN, bundle, check_torchscript, load_network, run_cmd

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vessel(tmp_path_factory, medmnist_root):
    root = tmp_path_factory.mktemp("uniform_vessel")
    common = ["--bundle_root", root, "--method", "uniform", "--dataset", "vesselmnist3d", "--data_dir", medmnist_root]
    run_cmd(TRAIN, args=[*common, "--max_epochs", 1, "--num_train", 32, "--num_val", 16, "--batch_size", 16,
                         "--progress_bar", "False", "--num_figures", 2])
    return root, common


def test_train_outputs(vessel):
    root, _ = vessel
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "last.pt").is_file()
    assert (root / "eval" / "figures" / "sampling_matrix.png").is_file()


def test_evaluate(vessel):
    root, common = vessel
    out = run_cmd(TRAIN, EVALUATE, args=[*common, "--num_test", 24])
    assert "evaluation on 24 samples" in out.stdout
    # a capped split (--num_test 24 of the whole test split): its reports beside the whole split's, the card untouched
    report = json.loads((root / "eval" / "n24" / "metrics.json").read_text())
    assert report["dataset"] == "vesselmnist3d" and report["label_names"] == ["vessel", "aneurysm"]
    assert sum(map(sum, report["confusion_matrix"])) == 24


def test_inference_on_medmnist_items(vessel):
    root, common = vessel
    run_cmd(INFERENCE, args=[*common, "--split", "test", "--num_items", 6, "--batch_size", 3])
    rows = list(csv.DictReader(open(root / "eval" / "predictions.csv")))
    assert [r["id"] for r in rows] == [f"vesselmnist3d_test_{i:06d}" for i in range(6)]
    uniform = load_network(root, method="uniform", dataset="vesselmnist3d").sample(torch.rand(1, 1, 28, 28, 28))
    expected = ";".join(str(int(i)) for i in uniform.indices[0])
    for r in rows:
        assert r["error"] == "" and r["label"] in ("0", "1") and r["pred_name"] in ("vessel", "aneurysm")
        assert r["kept_indices"] == expected and len(expected.split(";")) == 14


def test_export(vessel):
    root, common = vessel
    ts = root / "models" / "model.ts"
    bundle([sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(ts),
            "--ckpt_file", str(root / "models" / "model.pt"), "--meta_file", META, "--config_file", INFERENCE,
            "--bundle_root", str(root), "--method", "uniform", "--dataset", "vesselmnist3d",
            "--use_trace", "True", "--input_shape", "[1, 1, 28, 28, 28]"])
    check_torchscript(ts, load_network(root, method="uniform", dataset="vesselmnist3d"), (1, 28, 28, 28))
