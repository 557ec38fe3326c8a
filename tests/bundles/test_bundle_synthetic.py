"""
Round trip through the bundle CLI on the synthetic default with DAS: train (killed after its first checkpoint, then
resumed), evaluate, infer on NIfTI files (one unreadable, one already done), export to TorchScript and ONNX;
MLflow store; metadata checks.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from das_bundle_helpers import (
    EVALUATE,
    INFERENCE,
    META,
    SCHEMA,
    TINY,
    TRAIN,
    VIDEO_INFERENCE,
    bundle,
    check_onnx,
    check_torchscript,
    load_network,
    popen_train,
    run_cmd,
)

pytestmark = pytest.mark.slow

MAX_EPOCHS = 3
ITERS = 2  # 32 training volumes / batch 16


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train DAS on synthetic data; kill the process once ``last.pt`` exists; resume to ``MAX_EPOCHS``."""
    root = tmp_path_factory.mktemp("das_synthetic")
    args = ["--bundle_root", root, "--max_epochs", MAX_EPOCHS, *TINY]
    last = root / "models" / "last.pt"
    proc = popen_train(args)
    deadline = time.time() + 600
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.kill()
    killed_log = proc.communicate()[0]
    assert last.exists(), f"no last.pt before the kill:\n{killed_log[-4000:]}"
    state = torch.load(last, weights_only=True)["trainer"]
    killed_at = state["iteration"] // state["epoch_length"]
    assert 1 <= killed_at < MAX_EPOCHS, f"the first run got to epoch {killed_at} before the kill"
    out = run_cmd(TRAIN, args=[*args, "--resume", "true"])
    return {"root": root, "killed_at": killed_at, "log": out.stdout + out.stderr}


def test_resume_continues_with_nothing_lost(trained):
    root, killed_at, log = trained["root"], trained["killed_at"], trained["log"]
    assert "Restored all variables from" in log
    done = [int(e) for e in re.findall(r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete", log)]
    assert done == list(range(killed_at + 1, MAX_EPOCHS + 1))  # only the missing epochs were trained
    ckpt = torch.load(root / "models" / "last.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == MAX_EPOCHS * ITERS and ckpt["trainer"]["max_epochs"] == MAX_EPOCHS
    # Adam's step count covers every iteration of both processes: the optimizer state was restored
    steps = {int(s["step"]) for s in ckpt["optimizer"]["state"].values()}
    assert steps == {MAX_EPOCHS * ITERS}
    assert [g["name"] for g in ckpt["optimizer"]["param_groups"]] == ["sampler", "network"]
    # early stopping, best-model tracking and the validator's best metric are in the checkpoint too
    assert set(ckpt["early_stop"]) >= {"counter", "best_score"} and 0 <= ckpt["early_stop"]["counter"] < MAX_EPOCHS
    assert len(ckpt["best_checkpoint"]["_saved"]) == 1
    assert 1 <= ckpt["validator_state"]["best_metric_epoch"] <= MAX_EPOCHS
    # consistency: MONAI's best epoch (printed as "Key metric ... at epoch") is the saved best model's
    assert ckpt["validator_state"]["best_metric_epoch"] == ckpt["best_checkpoint"]["best_epoch"]
    best = torch.load(root / "models" / "model.pt", weights_only=True)
    assert set(best) == set(ckpt["model"])
    bad = [k for k, v in ckpt["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert not bad, f"training left non-finite weights: {bad[:5]}"
    assert sorted(p.name for p in (root / "models").iterdir()) == ["last.pt", "metadata.json", "model.pt"]  # no temp files


def test_mlflow_run(trained):
    from mlflow import MlflowClient
    from monai.utils import path_to_sqlite_uri

    root = trained["root"]
    client = MlflowClient(tracking_uri=path_to_sqlite_uri(root / "mlflow.db"))
    exp = client.get_experiment_by_name("das_volume_classification")
    assert exp is not None and exp.artifact_location.endswith("mlruns")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_name for r in runs] == ["das_synthetic28_keep0.5_seed0"]  # the resumed run continued it
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["method"] == "das" and run.data.params["dataset"] == "synthetic"
    for name in ("val_auc", "val_loss", "val_accuracy", "val_balanced_accuracy", "train_loss", "train_accuracy"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert set(steps) == set(range(1, MAX_EPOCHS + 1)), (name, steps)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"kept_frames.png", "sampling_matrix.png", "model.pt"} <= artifacts
    assert Path(run.info.artifact_uri.replace("file://", "")).resolve().is_relative_to(root.resolve())
    assert (root / "eval" / "figures" / "kept_frames.png").is_file()


def test_evaluate(trained):
    root = trained["root"]
    out = run_cmd(TRAIN, EVALUATE, args=["--bundle_root", root, "--num_test", 16])
    assert "evaluation on 16 samples" in out.stdout
    report = json.loads((root / "eval" / "metrics.json").read_text())
    assert set(report["metrics"]) >= {"auc", "accuracy", "balanced_accuracy", "loss"}
    assert report["method"] == "das" and report["split"] == "test" and report["num_samples"] == 16
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (2, 2) and cm.sum() == 16
    assert report["metrics"]["accuracy"] == pytest.approx(np.trace(cm) / 16)
    assert (root / "eval" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert 0.0 <= report["metrics"]["adaptivity"] <= 1.0 and "selection_entropy" in report["metrics"]
    assert 0.0 <= report["metrics"]["evidence_kept"] <= 1.0  # synthetic items carry their evidence slices
    positions = json.loads((root / "eval" / "test_kept_positions.json").read_text())
    assert positions["items"]["all"] == 16 and sum(positions["items"].values()) == 32  # all + the two classes
    assert sum(positions["kept_fraction"]["all"]) == pytest.approx(14)  # 14 of 28 slices kept per volume
    assert (report["num_kept"], report["num_frames"]) == (14, 28)
    # one row per test volume (named as bundle inference on the test split names it), its 14 kept slices
    rows = list(csv.DictReader(open(root / "eval" / "test_predictions.csv")))
    assert [r["id"] for r in rows] == [f"synthetic_test_{i:06d}" for i in range(16)]
    assert all(len(set(r["kept_indices"].split(";"))) == 14 for r in rows)
    assert sum(r["pred_label"] == r["label"] for r in rows) / 16 == pytest.approx(report["metrics"]["accuracy"])
    # any k from one model: --num_kept reaches the evaluation too (it was silently ignored: only inference.json had it)
    out = run_cmd(TRAIN, EVALUATE, args=["--bundle_root", root, "--num_test", 8, "--num_kept", 5])
    assert "evaluated at k=5" in out.stdout + out.stderr
    # beside, not over, the reports at the trained k
    assert json.loads((root / "eval" / "metrics.json").read_text())["num_kept"] == 14
    report = json.loads((root / "eval" / "k5" / "metrics.json").read_text())
    assert report["num_kept"] == 5 and report["num_samples"] == 8
    assert report["keep_ratio"] == round(5 / 28, 4)  # what was kept, not the training's keep_ratio option
    positions = json.loads((root / "eval" / "k5" / "test_kept_positions.json").read_text())
    assert sum(positions["kept_fraction"]["all"]) == pytest.approx(5) and positions["num_kept"] == 5


def test_inference_on_files(trained, tmp_path):
    import nibabel as nib

    root = trained["root"]
    studies = tmp_path / "studies"
    studies.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.nii.gz", "b.nii.gz"):
        nib.save(nib.Nifti1Image(rng.random((30, 30, 26)).astype(np.float32), np.eye(4)), studies / name)
    (studies / "broken.nii.gz").write_bytes(b"\x1f\x8b truncated")
    nib.save(nib.Nifti1Image(rng.random((16, 40, 40)).astype(np.float32), np.eye(4)), studies / "c.nii")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # a previous (killed) run already wrote a.nii.gz: it must be skipped, not redone
    from monai_das.data import study_fingerprint

    from monai.bundle import ConfigParser

    parser = ConfigParser()  # the key of this model and these settings (checkpoint SHA-256 + prediction_settings)
    parser.read_config(INFERENCE)
    parser.update({"bundle_root": str(root), "input": str(studies), "output_dir": str(out_dir)})
    key = parser.get_parsed_content("prediction_key")
    fields = ["id", "source", "fingerprint", "label", "pred_label", "pred_name", "prob_disc", "prob_square",
              "kept_indices", "source_frames", "error", "warnings", "model"]
    a = studies / "a.nii.gz"  # kept only while its source, fingerprint and model key match
    done_row = ["a.nii.gz", str(a), study_fingerprint(a), "-1", "0", "disc", "0.9", "0.1", "0;1", "", "", "", key]
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        csv.writer(f).writerows([fields, done_row])
    log = run_cmd(INFERENCE, args=["--bundle_root", root, "--input", studies, "--output_dir", out_dir], check=False)
    assert "1 already done, 3 to run" in log.stdout + log.stderr
    # every study written, then exit status 3 for the unreadable one, as the Deploy app's (it was 0: trial T55)
    assert log.returncode == 3, (log.stdout + log.stderr)[-3000:]
    assert "1 of 4 studies in " in log.stdout + log.stderr and "could not be classified" in log.stdout + log.stderr
    rows = list(csv.DictReader(open(out_dir / "predictions.csv")))
    assert [r["id"] for r in rows] == ["a.nii.gz", "b.nii.gz", "broken.nii.gz", "c.nii"]
    # kept as written, in the columns of this version (label_name added: from label -1, unknown)
    assert list(rows[0].values()) == done_row[:4] + [""] + done_row[4:]
    bad = rows[2]
    assert "broken.nii.gz" in bad["error"] and bad["pred_label"] == ""
    for r in (rows[1], rows[3]):
        assert r["error"] == "" and r["pred_name"] in ("disc", "square")
        assert float(r["prob_disc"]) + float(r["prob_square"]) == pytest.approx(1.0, abs=1e-4)
        idx = [int(i) for i in r["kept_indices"].split(";")]
        assert len(idx) == 14 and idx == sorted(set(idx)) and 0 <= idx[0] and idx[-1] < 28
    assert len(json.loads((out_dir / "predictions.json").read_text())) == 4


def test_a_rerun_with_nothing_left_to_run_starts_no_evaluator(trained, tmp_path):
    """A rerun whose studies are all done said "0 to run", then MONAI's "`dataloader` is empty ... may hang in
    all-gather" warning (trial T70i): the evaluator runs only when there is a study to run."""
    import warnings

    import nibabel as nib
    from monai.bundle import ConfigParser

    studies, out_dir = tmp_path / "studies", tmp_path / "out"
    studies.mkdir()
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((28, 28, 28)).astype(np.float32), np.eye(4)),
             studies / "a.nii.gz")
    for _ in range(2):
        parser = ConfigParser()
        parser.read_config(INFERENCE)
        parser.update({"bundle_root": str(trained["root"]), "input": str(studies), "output_dir": str(out_dir)})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parser.get_parsed_content("run")
    assert not [w for w in caught if "is empty" in str(w.message)]
    assert [r["id"] for r in csv.DictReader(open(out_dir / "predictions.csv"))] == ["a.nii.gz"]


def test_inference_at_another_k_writes_beside_the_trained_k(trained):
    """Any k at inference: predictions at another k than the card's go to eval/k<k>/, not over eval/predictions.csv."""
    from monai.bundle import ConfigParser

    def output_dir(**overrides):
        parser = ConfigParser()
        parser.read_config(INFERENCE)
        parser.update({"bundle_root": str(trained["root"]), **overrides})
        return Path(parser.get_parsed_content("predictions_csv")).parent

    eval_dir = trained["root"] / "eval"
    assert output_dir() == output_dir(num_kept=14) == eval_dir
    assert output_dir(num_kept=5) == output_dir(keep_ratio=0.18) == eval_dir / "k5"


def test_export_torchscript(trained):
    root = trained["root"]
    ts = root / "models" / "model.ts"
    bundle([sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(ts),
            "--ckpt_file", str(root / "models" / "model.pt"), "--meta_file", META, "--config_file", INFERENCE,
            "--bundle_root", str(root), "--use_trace", "True", "--input_shape", "[1, 1, 28, 28, 28]"])
    check_torchscript(ts, load_network(root), (1, 28, 28, 28))


def test_export_onnx(trained):
    root = trained["root"]
    onnx_path = root / "models" / "model.onnx"
    bundle([sys.executable, "-m", "monai.bundle", "onnx_export", "network_def", "--filepath", str(onnx_path),
            "--ckpt_file", str(root / "models" / "model.pt"), "--meta_file", META, "--config_file", INFERENCE,
            "--bundle_root", str(root), "--input_shape", "[1, 1, 28, 28, 28]",
            "--converter_kwargs", "{'dynamo': True}"])
    check_onnx(onnx_path, load_network(root), (1, 28, 28, 28))


def test_verify_metadata_and_net_in_out():
    from monai.bundle import verify_metadata, verify_net_in_out

    if not SCHEMA.is_file():
        pytest.skip(f"bundle metadata schema not found at {SCHEMA}")
    verify_metadata(meta_file=META, filepath=str(SCHEMA))  # no download: the schema file is already there
    for config in (TRAIN, INFERENCE):
        verify_net_in_out(net_id="network_def", meta_file=META, config_file=config, device="cpu")


@pytest.mark.parametrize("inference", [INFERENCE, VIDEO_INFERENCE])
def test_prediction_settings_keep_what_the_model_keeps(inference):
    """The resume key's ``num_kept`` is the model's k: ``T`` for ``full`` whatever ``keep_ratio`` says."""
    from monai.bundle import ConfigParser

    def settings(**overrides):
        parser = ConfigParser()
        parser.read_config(inference)
        parser.update(overrides)
        return parser.get_parsed_content("prediction_settings#num_kept"), parser.get_parsed_content("info")

    (full_half, info), (full_quarter, _) = settings(method="full"), settings(method="full", keep_ratio=0.25)
    assert full_half == full_quarter == info["num_frames"]
    assert settings(method="das", keep_ratio=0.25)[0] == max(1, round(0.25 * info["num_frames"]))
    assert settings(method="das", num_kept=3)[0] == 3


@pytest.mark.parametrize("bundle", ["das_volume_classification", "das_video_classification"])
def test_an_evaluation_of_another_split_writes_beside_the_test_reports(bundle, tmp_path):
    """validate#split val replaced eval/metrics.json, the confusion matrix and the kept positions of the test split
    (the card kept its test metrics, the files on disk did not; recheck of trial N): it writes to eval/val/."""
    from monai.bundle import ConfigParser

    configs = Path(__file__).resolve().parents[2] / "bundles" / bundle / "configs"
    for split, where in (("test", tmp_path / "eval"), ("val", tmp_path / "eval" / "val")):
        parser = ConfigParser()
        parser.read_config([str(configs / "train.json"), str(configs / "evaluate.json")])
        parser.update({"bundle_root": str(tmp_path), "validate#split": split, "num_train": 4, "num_val": 4,
                       "num_test": 4})
        assert parser.get_parsed_content("output_dir") == str(where)


@pytest.mark.parametrize("bundle", ["das_volume_classification", "das_video_classification"])
def test_inference_on_an_input_writes_beside_the_split_predictions(bundle, tmp_path):
    """Bundle inference with --input wrote into eval/ too, and a predictions file keeps the rows of its own listing
    only: predicting new studies dropped the test split's predictions (and a second folder the first's, after the
    fact, with a warning). A dataset split writes eval/, an input predictions/<its name>-<tag of its path>/: series
    folders of one name (a PACS export's P1/ST1/SE2_CT and P3/ST1/SE2_CT) shared one folder (trial Y)."""
    from monai.bundle import ConfigParser

    from monai_das.engines import inference_output_dir

    configs = Path(__file__).resolve().parents[2] / "bundles" / bundle / "configs"
    seen = set()
    for given in (None, "/data/new_studies/", "/data/list.csv", "/pacs/P1/ST1/SE2_CT", "/pacs/P3/ST1/SE2_CT"):
        parser = ConfigParser()
        parser.read_config(str(configs / "inference.json"))
        parser.update({"bundle_root": str(tmp_path), "input": given})
        where = Path(parser.get_parsed_content("output_dir"))
        assert where == (tmp_path / "eval" if given is None else where)
        if given is not None:
            assert where.parent == tmp_path / "predictions"
            assert re.fullmatch(re.escape(Path(given).name) + r"-[0-9a-f]{8}", where.name), where
        seen.add(where)
    assert len(seen) == 5  # every input its own folder
    # another split than the test split writes beside evaluate.json's reports of it: --split val replaced the test
    # split's predictions file (trial T66a)
    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    parser.update({"bundle_root": str(tmp_path), "split": "val"})
    assert Path(parser.get_parsed_content("output_dir")) == tmp_path / "eval" / "val"
    assert inference_output_dir(tmp_path, None, "../x") == str(tmp_path / "eval")  # a name only, refused later
    # "." and "..": the folder's own name, never the bundle root or a parent; the same input, the same folder
    assert Path(inference_output_dir(tmp_path, tmp_path / "studies" / "..")).name.startswith(tmp_path.name + "-")
    assert inference_output_dir(tmp_path, "/data/x/") == inference_output_dir(tmp_path, "/data/x")
    # a link is named as the link (its studies' ids are the link's paths), not as the folder it leads to
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert Path(inference_output_dir(tmp_path, tmp_path / "link")).name.startswith("link-")