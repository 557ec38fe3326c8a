"""
"Bring your own data" end to end with documented keys only: a NIfTI datalist JSON through the volume bundle (facts
from the data: non-cubic grid, string labels, axial slices; patient-level validation split) and a CSV of clips through
the video bundle: train, evaluate, infer over a folder; a bad datalist stops training before it starts.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from das_bundle_helpers import EVALUATE, INFERENCE, META, TRAIN, VIDEO_INFERENCE, VIDEO_TRAIN, run_cmd

pytestmark = pytest.mark.slow

GRID = (20, 20, 12)  # non-cubic, slices along the last (axial after RAS) axis
# lr 1e-4 (not the 1e-3 default): one or two epochs on 16-40 items at 1e-3 can leave every validation prediction
# equal, an epoch the bundle never keeps as best (no model.pt to infer with)
COMMON = ["--progress_bar", "false", "--num_figures", "2", "--batch_size", "8", "--num_threads", "1", "--lr", "0.0001"]


def make_volumes(folder: Path, n: int = 40, seed: int = 0) -> list[dict]:
    """NIfTI volumes with class evidence in 3 axial slices: a bright square (benign) or a bright cross (malignant)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        label = i % 2
        vol = rng.normal(100, 5, GRID).astype(np.float32)
        evidence = sorted(rng.choice(GRID[2], 3, replace=False).tolist())
        for z in evidence:
            if label == 0:
                vol[6:14, 6:14, z] += 80
            else:
                vol[9:11, 4:16, z] += 80
                vol[4:16, 9:11, z] += 80
        name = f"case{i:03d}.nii.gz"
        nib.Nifti1Image(vol, np.eye(4)).to_filename(str(folder / name))
        items.append({"image": f"{folder.name}/{name}", "label": ["benign", "malignant"][label],
                      "group": f"patient{i // 2}",
                      # evidence on some items only, as in a real datalist: the others must still batch with them
                      **({"evidence": evidence} if i % 4 < 2 else {})})
    return items


def make_clips(folder: Path, n: int = 16, frames: int = 12, size: int = 24) -> list[list[str]]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = i % 2
        path = folder / f"clip{i:02d}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size, size))
        for t in range(frames):
            img = np.full((size, size, 3), 40, np.uint8)
            if t in (3, 4, 5):
                img[4:20, 4:20] = 220 if label else 120
            writer.write(img)
        writer.release()
        rows.append([f"{folder.name}/{path.name}", ["a_lines", "b_lines"][label], f"pt{i // 2}"])
    return rows


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    data = tmp_path_factory.mktemp("own_volumes")
    items = make_volumes(data / "images")
    datalist = data / "datalist.json"  # no validation list: split from training by patient
    datalist.write_text(json.dumps({"training": items[:32], "test": items[32:]}, indent=1))
    root = data / "bundle"
    args = ["--datalist", datalist, "--slice_axis", "axial", "--max_epochs", 2, "--bundle_root", root, *COMMON]
    out = run_cmd(TRAIN, args=args, cwd=data)  # as a user would: from the study's folder, not the repository
    return {"data": data, "datalist": datalist, "root": root, "args": args, "log": out.stdout + out.stderr}


def test_facts_come_from_the_data(volumes):
    settings = torch.load(volumes["root"] / "models" / "last.pt", weights_only=True)["settings"]
    assert settings["spatial_size"] == list(GRID) and settings["num_frames"] == GRID[2]  # axial = axis 2 after RAS
    assert settings["slice_axis"] == 2 and settings["label_names"] == ["benign", "malignant"]
    assert settings["in_channels"] == 1 and settings["num_classes"] == 2
    assert len(settings["datalist_sha256"]) == 64
    assert "has no validation list" in volumes["log"]
    # the datalist's evidence slices are tracked during validation
    assert "val_evidence_kept" in volumes["log"] and "val_adaptivity" in volumes["log"]
    # trained from another folder with its own bundle_root, the model card is still built on the bundle's metadata
    card = json.loads((volumes["root"] / "models" / "metadata.json").read_text())
    meta = json.loads(Path(META).read_text())
    assert card["name"] == meta["name"] and card["version"] == meta["version"]
    assert card["changelog"] == meta["changelog"]  # read as plain JSON: no '#' rewritten by a config parser
    assert "bundle metadata" not in volumes["log"]


def test_mlflow_records_provenance(volumes):
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{volumes['root'] / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("das_volume_classification").experiment_id])
    params = run.data.params
    assert params["datalist"] == str(volumes["datalist"].resolve())
    assert len(params["datalist_sha256"]) == 64 and params["spatial_size"] == str(list(GRID))
    assert "'axcodes': 'RAS'" in params["recipe"] and params["label_names"] == "['benign', 'malignant']"
    # the datalist, not the unused defaults of the built-in datasets (the card's run_params said synthetic, size 28)
    assert params["dataset"] == "datalist" and params["size"] == "None"
    card = json.loads((volumes["root"] / "models" / "metadata.json").read_text())
    assert card["das_model"]["run_params"]["dataset"] == "datalist" and card["das_model"]["run_params"]["size"] is None


def test_evaluate_on_the_test_list(volumes, predictions):
    # --class_weights given at evaluation changed the test loss (the training objective's weights; trial X): the
    # test loss is the unweighted cross-entropy of the predictions, recomputed from the rows below
    # the training's datalist and --slice_axis are the card's: not typed again (they had to be)
    out = run_cmd(TRAIN, EVALUATE, args=["--bundle_root", volumes["root"], "--progress_bar", "false",
                                         "--num_threads", "1", "--mlflow", "false", "--class_weights", "[1.0,5.0]"])
    assert "evaluation on 8 samples" in out.stdout + out.stderr
    assert f'datalist "{volumes["datalist"].resolve()}"' in out.stdout + out.stderr
    report = json.loads((volumes["root"] / "eval" / "metrics.json").read_text())
    assert report["label_names"] == ["benign", "malignant"] and report["num_samples"] == 8
    # k and T of the evaluation, and which splits it read (the card's check of them: tests/handlers)
    assert report["num_kept"] == max(1, round(0.5 * report["num_frames"]))
    assert report["splits"]["dataset"] == "datalist" and len(report["splits"]["datalist_sha256"]) == 64
    from monai_das.utils import file_digest  # which model it describes (a retrain's summary compares it)

    assert report["checkpoint_sha256"] == file_digest(volumes["root"] / "models" / "model.pt")
    # one row per evaluated study, named as bundle inference names it: the metrics can be recomputed from the rows,
    # and the evaluation (eager PyTorch) gives each study what inference (ONNX Runtime) gave it
    from sklearn.metrics import roc_auc_score

    rows = list(csv.DictReader(open(volumes["root"] / "eval" / "test_predictions.csv")))
    assert [r["index"] for r in rows] == [str(i) for i in range(8)] and len({r["id"] for r in rows}) == 8
    # named by the paths the datalist gives (as --input <the datalist> names them; they were relative to the test
    # images' common folder, recheck R52)
    listed = {it["image"] for it in json.loads(volumes["datalist"].read_text())["test"]}
    assert {r["id"] for r in rows} <= listed
    labels = [int(r["label"]) for r in rows]
    probs = [float(r["prob_malignant"]) for r in rows]
    assert roc_auc_score(labels, probs) == pytest.approx(report["metrics"]["auc"], abs=1e-6)
    right = [int(r["pred_label"]) == t for r, t in zip(rows, labels)]
    assert np.mean(right) == pytest.approx(report["metrics"]["accuracy"])
    true_prob = [float(r[f"prob_{r['label_name']}"]) for r in rows]
    assert -np.mean(np.log(true_prob)) == pytest.approx(report["metrics"]["loss"], abs=1e-4)
    for r in rows:
        inferred = predictions[Path(r["id"]).name]  # the folder run names them relative to the folder
        assert float(r["prob_malignant"]) == pytest.approx(float(inferred["prob_malignant"]), abs=1e-4)
        assert r["kept_indices"] == inferred["kept_indices"] and r["pred_name"] == inferred["pred_name"]
        assert r["label_name"] == ["benign", "malignant"][int(r["label"])]
        # the kept slices as the file's own slice numbers, as inference names them (evaluation had none)
        assert r["source_frames"] and r["source_frames"] == inferred["source_frames"]
    # each study's patient (the datalist's group), which compare draws whole
    groups = {it["image"]: it["group"] for it in json.loads(volumes["datalist"].read_text())["test"]}
    assert [r["group"] for r in rows] == [groups[r["id"]] for r in rows] and len({r["group"] for r in rows}) == 4


def test_an_external_test_set_is_evaluated_beside_the_trainings_reports(volumes, tmp_path):
    """A datalist of a test list alone (another site's studies) was refused ("has no 'training' list"), and an
    external evaluation replaced the card's test metrics and eval/ (trial X, review H5): it is evaluated into
    eval/<its name>-<tag>/, the card and eval/metrics.json untouched."""
    card, report = volumes["root"] / "models" / "metadata.json", volumes["root"] / "eval" / "metrics.json"
    before = card.read_bytes(), report.read_bytes() if report.is_file() else None
    lists = json.loads(volumes["datalist"].read_text())
    external = volumes["data"] / "site2.json"
    args = [a if a != volumes["datalist"] else external for a in volumes["args"]]
    # a list holding training studies (an edited copy that moved a patient to its test list) is refused, naming them
    # (it was scored with a warning to "make sure"; trial T58): the training's datalist is here, unchanged
    external.write_text(json.dumps({"labels": {"0": "benign", "1": "malignant"},
                                    "test": lists["training"][:2] + lists["test"][:4]}))
    bad = run_cmd(TRAIN, EVALUATE, args=[*args, "--mlflow", "false"], check=False)
    assert bad.returncode != 0
    assert "2 of the 6 studies this evaluation reads were training or validation studies" in bad.stdout + bad.stderr
    assert "case000.nii.gz" in bad.stdout + bad.stderr
    external.write_text(json.dumps({"labels": {"0": "benign", "1": "malignant"}, "test": lists["test"][:6]}))
    out = run_cmd(TRAIN, EVALUATE, args=[*args, "--mlflow", "false"])
    assert "has no training list: a test set" in out.stdout + out.stderr
    assert "none of its studies is a training or validation study of the training's datalist" in out.stdout + out.stderr
    from monai_das.utils.io import input_folder_name

    folder = volumes["root"] / "eval" / input_folder_name(external)  # site2.json-<8 hex of its path>
    assert folder.name.startswith("site2.json-")
    ext = json.loads((folder / "metrics.json").read_text())
    assert ext["num_samples"] == 6 and ext["datalist"] == str(external)
    assert (folder / "test_predictions.csv").is_file()
    assert (card.read_bytes(), report.read_bytes() if report.is_file() else None) == before


@pytest.fixture(scope="module")
def predictions(volumes, tmp_path_factory):
    out = tmp_path_factory.mktemp("own_predictions")
    # the folder of new studies alone: classes, grid, slice axis and recipe from the model card (the training's
    # datalist and --slice_axis had to be given again; the evaluation below, on the datalist, gives the same answers)
    log = run_cmd(INFERENCE, args=["--bundle_root", volumes["root"], "--input", volumes["data"] / "images",
                                   "--output_dir", out])
    log = log.stdout + log.stderr
    assert "from the model card" in log and "slice_axis 2" in log and "no datalist: the classes" in log
    return {r["id"]: r for r in csv.DictReader(open(out / "predictions.csv"))}


def test_infer_over_a_folder(predictions):
    assert len(predictions) == 40 and not any(r["error"] for r in predictions.values())
    for r in predictions.values():
        probs = [float(r["prob_benign"]), float(r["prob_malignant"])]
        assert abs(sum(probs) - 1) < 1e-4 and r["pred_name"] in ("benign", "malignant")
        kept = [int(i) for i in r["kept_indices"].split(";")]
        src = [int(i) for i in r["source_frames"].split(";")]
        assert len(kept) == len(src) == 6 and 0 <= min(kept) and max(kept) < GRID[2]
        assert 0 <= min(src) and max(src) < GRID[2]  # slice numbers of the file itself (RAS = stored order here)


def test_export_describes_itself_and_gives_the_same_probabilities(volumes, predictions):
    """ckpt_export with the run's model card: the bare .ts knows the 20×20×12 grid, labels and recipe, and the
    Deploy predictor on a study file matches the bundle's batch inference."""
    import sys

    from das_bundle_helpers import bundle

    from monai_das.data import discover_studies
    from monai_das.deploy import DASPredictor
    from monai_das.deploy.studies import StudyLoader

    models = volumes["root"] / "models"
    ts = models / "model.ts"
    bundle([sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(ts),
            "--ckpt_file", str(models / "model.pt"), "--meta_file", str(models / "metadata.json"),
            "--config_file", INFERENCE, "--bundle_root", str(volumes["root"]), "--use_trace", "True",
            "--datalist", str(volumes["datalist"]), "--slice_axis", "axial"])
    pred = DASPredictor.from_path(ts, engine="torchscript")
    assert pred.spec.spatial_size == GRID and pred.spec.labels == ["benign", "malignant"]
    assert pred.spec.slice_axis == 2 and pred.spec.recipe["axcodes"] == "RAS"
    (study,) = discover_studies(volumes["data"] / "images" / "case005.nii.gz")
    out = pred.predict(StudyLoader(pred.spec).load(study).image)  # the Deploy app's loader, from the card's recipe
    row = predictions["case005.nii.gz"]
    assert out.probabilities == pytest.approx([float(row["prob_benign"]), float(row["prob_malignant"])], abs=1e-4)
    assert out.kept_indices == [int(i) for i in row["kept_indices"].split(";")]


@pytest.mark.parametrize("config", [TRAIN, INFERENCE, VIDEO_TRAIN, VIDEO_INFERENCE])
def test_the_recipe_records_the_training_modalities(tmp_path, config):
    """Both bundles' recipe (in the model card; read by bundle inference, the Deploy app and MONAI Label, which warn
    about a study of another modality) records the DICOM modalities of the training studies: CT series for the volume
    bundle, ultrasound cines for the video bundle. A datalist without DICOM files records none."""
    import pydicom
    from monai.bundle import ConfigParser
    from pydicom.data import get_testdata_file

    video = config in (VIDEO_TRAIN, VIDEO_INFERENCE)
    items = []
    for i in range(4):
        if video:  # a multi-frame ultrasound cine
            d = pydicom.dcmread(get_testdata_file("examples_ybr_color.dcm"))
            d.SOPInstanceUID, d.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
            d.save_as(tmp_path / f"c{i}.dcm")
            items.append({"image": f"c{i}.dcm", "label": "ab"[i % 2], "group": f"p{i}"})
            continue
        series, uid = tmp_path / f"s{i}", pydicom.uid.generate_uid()  # a CT series of 3 slices
        series.mkdir()
        for z in range(3):
            d = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
            d.InstanceNumber, d.SeriesInstanceUID, d.SOPInstanceUID = z + 1, uid, pydicom.uid.generate_uid()
            d.ImagePositionPatient = [*(float(v) for v in d.ImagePositionPatient[:2]), 5.0 * z]
            d.save_as(series / f"{z}.dcm")
        items.append({"image": series.name, "label": "ab"[i % 2], "group": f"p{i}"})
    (tmp_path / "dl.json").write_text(json.dumps({"training": items}))
    parser = ConfigParser()
    parser.read_config(config)
    parser.update({"bundle_root": str(tmp_path / "root"), "datalist": str(tmp_path / "dl.json"), "val_fraction": 0.5})
    recipe = parser.get_parsed_content("recipe")
    assert recipe["modalities"] == (["US"] if video else ["CT"])
    assert parser.get_parsed_content("model_facts")["recipe"]["modalities"] == recipe["modalities"]
    parser.update({"datalist": None})  # the synthetic data: no DICOM modality
    parser.ref_resolver.reset()
    assert parser.get_parsed_content("recipe", lazy=False)["modalities"] is None


def test_bad_datalist_refused_before_training(volumes, tmp_path):
    items = json.loads(volumes["datalist"].read_text())["training"]
    items[3]["image"] = "images/missing.nii.gz"
    bad = volumes["data"] / "bad.json"
    bad.write_text(json.dumps({"training": items}))
    out = run_cmd(TRAIN, args=["--datalist", bad, "--bundle_root", tmp_path, *COMMON], check=False)
    log = out.stdout + out.stderr
    assert out.returncode != 0 and "bad.json:training[3]" in log and "missing.nii.gz" in log
    # the last line names the refusal, not MONAI's "Failed to evaluate ConfigExpression" (trial V)
    last = log.strip().splitlines()[-1]
    assert last.startswith("monai_das: the run stopped: ") and "missing.nii.gz" in last, last
    # a refused run leaves no empty models/ and eval/ behind (the write check probes without making them)
    assert not (tmp_path / "models").exists() and not (tmp_path / "eval").exists()
    # a swapped window (it would invert every volume) is refused in `initialize`, before the training set is read:
    # the truncated file beside it, which only reading the data finds, is not reached
    items = json.loads(volumes["datalist"].read_text())["training"]
    body = (volumes["data"] / items[3]["image"]).read_bytes()
    (volumes["data"] / "images" / "truncated.nii.gz").write_bytes(body[: len(body) // 2])
    items[3]["image"] = "images/truncated.nii.gz"
    swapped = volumes["data"] / "swapped.json"
    swapped.write_text(json.dumps({"training": items}))
    out = run_cmd(TRAIN, args=["--datalist", swapped, "--bundle_root", tmp_path, "--intensity_range", "[400, -1000]",
                               *COMMON], check=False)
    log = out.stdout + out.stderr
    assert out.returncode != 0 and "--intensity_range [a_min, a_max] must have a_min < a_max, got [400, -1000]" in log
    assert "truncated.nii.gz" not in log


def test_clip_csv_through_the_video_bundle(tmp_path):
    rows = make_clips(tmp_path / "clips")
    listing = tmp_path / "clips.csv"
    with open(listing, "w", newline="") as f:
        csv.writer(f).writerows([["image", "label", "group"], *rows])
    root = tmp_path / "bundle"
    # the CSV cannot name its class order: --label_names does (sorted, a_lines would be class 0)
    order = "['b_lines','a_lines']"
    args = ["--datalist", listing, "--num_frames", 8, "--size", 24, "--label_names", order, "--bundle_root", root,
            *COMMON]
    run_cmd(VIDEO_TRAIN, args=[*args, "--max_epochs", 1, "--mlflow", "false"])
    settings = torch.load(root / "models" / "last.pt", weights_only=True)["settings"]
    assert settings["layout"] == "video" and settings["num_frames"] == 8
    assert settings["label_names"] == ["b_lines", "a_lines"]
    # inference on other --num_frames/--size would run the network on 32 frames of 112², and on another class order
    # would swap the classes: refused, naming each option
    other = ["--num_frames", 32, "--size", 112, "--label_names", "['a_lines','b_lines']", "--bundle_root", root]
    bad = run_cmd(VIDEO_INFERENCE, args=[*other, "--input", tmp_path / "clips", "--output_dir", tmp_path / "bad"],
                  check=False)
    log = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "num_frames: trained 8, this run 32" in log
    assert "label_names: trained ['b_lines', 'a_lines'], this run ['a_lines', 'b_lines']" in log
    assert "Give the training's options: --size 24; --num_frames 8; the classes ['b_lines', 'a_lines'] in this order: " \
           f"""--datalist {listing} (the training's) --label_names '["b_lines", "a_lines"]'""" in log
    assert "or leave them out" in log
    assert not (tmp_path / "bad").exists()  # a refused run leaves nothing behind, not even its output folder
    # without them, the training's come from the model card (they had to be typed again)
    run_cmd(VIDEO_INFERENCE, args=["--bundle_root", root, "--input", tmp_path / "clips",
                                   "--output_dir", tmp_path / "out", "--num_threads", 1])
    preds = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert len(preds) == 16 and not any(r["error"] for r in preds)
    for r in preds:
        src = [int(i) for i in r["source_frames"].split(";")]
        assert len(src) == 4 and src == sorted(src) and 0 <= src[0] and src[-1] < 12  # the file's own frames
        assert {"prob_a_lines", "prob_b_lines"} <= set(r)
