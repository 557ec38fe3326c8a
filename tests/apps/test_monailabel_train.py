"""
The MONAI Label sample app's train task (apps/monailabel_das/lib/trainers), run against the real ``monailabel``
0.8.5 package of ``.venv-deploy`` (scripts/setup_deploy_env.sh); skipped elsewhere.

What is real: ``monailabel.datastore.local.LocalDatastore`` (images and labels saved, label info, image info; needs
``watchdog``), ``monailabel.tasks.train.bundle.BundleTrainTask`` (the train task's base: bundle config and metadata
loading, ``is_valid``/``info``), ``monailabel.interfaces.tasks.train.TrainTask``, and the app's infer task
(``BasicInferTask``). Training runs ``python -m monai.bundle run`` in a subprocess: on a stand-in bundle (a real
MONAI bundle config whose ``run`` trains the real DAS network for one step from the datalist; it checks the task's
plumbing: datalist, command, model folder, reload by the infer task) and, when the repository's DAS bundle reads
``--datalist``, on that bundle for one epoch at 16³.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("monailabel", reason="monailabel not installed (run scripts/setup_deploy_env.sh)")
pytest.importorskip("monailabel.datastore.local", reason="LocalDatastore needs watchdog (monailabel's dependency)")

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "apps" / "monailabel_das"
GRID = (16, 16, 16)


def repo_bundle() -> Path:
    """The repository's DAS volume bundle (its new name, else the old one while it is being renamed)."""
    for name in ("das_volume_classification", "das_medmnist3d"):
        if (REPO / "bundles" / name / "configs" / "train.json").is_file():
            return REPO / "bundles" / name
    pytest.skip("no DAS volume bundle in bundles/")


@pytest.fixture(scope="module")
def app():
    """The app's modules, imported as MONAI Label imports them (``lib`` package of the app folder)."""
    sys.path.insert(0, str(APP_DIR))
    try:
        from lib import app_tasks
        from lib.infers import DASClassification
        from lib.trainers import DASTrain, das_train
    finally:
        sys.path.remove(str(APP_DIR))
    return {"DASTrain": DASTrain, "DASClassification": DASClassification, "das_train": das_train,
            "app_tasks": app_tasks}


# ---------------------------------------------------------------------------------------------------- studies
def write_volume(path: Path, label: int, seed: int) -> Path:
    """A 16³ NIfTI volume; class 1 has a bright cube in the middle."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    vol = rng.uniform(0.0, 0.2, GRID).astype(np.float32)
    if label:
        vol[4:12, 4:12, 4:12] += 0.8
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    return path


def class_file(folder: Path, name: str, value=None) -> Path:
    """A JSON label file ``{"label": value}`` (``value`` None: ``{}``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({} if value is None else {"label": value}))
    return path


def make_datastore(root: Path, labels: dict, infos: dict | None = None, file_labels: dict | None = None):
    """
    A real ``LocalDatastore`` in ``root/studies`` with one volume per key of ``labels``: value = the class saved
    as the final label's label info ``{"label": value}`` (``None``: no label); ``file_labels``: classes given only in
    the JSON label file; ``infos``: image info updates (e.g. ``patient_id``).
    """
    from monailabel.datastore.local import LocalDatastore

    src = root / "incoming"
    for i, (image_id, value) in enumerate({**labels, **(file_labels or {})}.items()):
        positive = value in ("abnormal", 1, "1")
        write_volume(src / f"{image_id}.nii.gz", int(positive), seed=i)
    ds = LocalDatastore(str(root / "studies"), extensions=("*.nii.gz", "*.nii"), auto_reload=False)
    for image_id in {**labels, **(file_labels or {})}:
        ds.add_image(image_id, str(src / f"{image_id}.nii.gz"), (infos or {}).get(image_id, {}))
    for image_id, value in labels.items():
        if value is not None:
            ds.save_label(image_id, str(class_file(root / "label_files", image_id)), "final", {"label": value})
    for image_id, value in (file_labels or {}).items():
        ds.save_label(image_id, str(class_file(root / "label_files", image_id, value)), "final", {})
    return ds


LABELS6 = {"s0": "normal", "s1": "abnormal", "s2": "normal", "s3": "abnormal", "s4": "normal", "s5": "abnormal"}


# ---------------------------------------------------------------------------------------------------- datalist
def test_datalist_from_local_datastore(app, tmp_path):
    from monai_das.data import load_datalist

    build = app["das_train"].datastore_datalist
    ds = make_datastore(
        tmp_path, {**LABELS6, "s5": None, "unlabelled": None}, file_labels={"s6": "abnormal"},
        infos={"s0": {"patient_id": "P1"}, "s2": {"patient_id": "P1"}},
    )
    assert ds.get_label_info("s1", "final")["label"] == "abnormal"  # what the task reads, as monailabel stores it
    datalist, root = build(ds)
    assert root == str((tmp_path / "studies").resolve())
    assert datalist["labels"] == {"0": "abnormal", "1": "normal"}  # sorted names
    items = {Path(it["image"]).name.split(".")[0]: it for it in datalist["training"]}
    # s5 and "unlabelled" have no final label; s6's class is in its JSON label file
    assert sorted(items) == ["s0", "s1", "s2", "s3", "s4", "s6"]
    assert {k: it["label"] for k, it in items.items()} == {"s0": 1, "s1": 0, "s2": 1, "s3": 0, "s4": 1, "s6": 0}
    assert items["s0"]["group"] == items["s2"]["group"] == "P1" and items["s1"]["group"] == "s1"
    assert all(not Path(it["image"]).is_absolute() for it in datalist["training"])

    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(datalist))
    read = load_datalist(path, dataset_dir=root)  # the bundle's own reader accepts it
    assert [it["label_name"] for it in read] == [datalist["labels"][str(it["label"])] for it in datalist["training"]]
    assert all(Path(it["image"]).is_file() for it in read)


def test_datalist_with_app_labels_and_indices(app, tmp_path):
    build = app["das_train"].datastore_datalist
    ds = make_datastore(tmp_path, {"a": "normal", "b": 1, "c": "1", "d": 0})
    datalist, _ = build(ds, label_names=["normal", "abnormal"])
    assert datalist["labels"] == {"0": "normal", "1": "abnormal"}
    assert [it["label"] for it in datalist["training"]] == [0, 1, 1, 0]
    # indices only, no names: classes "0".."max"
    ds2 = make_datastore(tmp_path / "idx", {"a": 0, "b": 2, "c": "1", "d": 0, "e": 2, "f": 1})
    datalist, _ = build(ds2)
    assert datalist["labels"] == {"0": "0", "1": "1", "2": "2"}
    assert [it["label"] for it in datalist["training"]] == [0, 2, 1, 0, 2, 1]
    # a class without images (1-based indices read as 0..2, or a name of --conf labels nobody has): refused, as the
    # bundle refuses it, not trained into a model that gives the empty class probabilities
    ds3 = make_datastore(tmp_path / "one_based", {"a": 1, "b": 2, "c": 1, "d": 2})
    with pytest.raises(ValueError, match=r"no labelled image has the class\(es\) \['0'\] \(class indices read as 0..2"):
        build(ds3)
    with pytest.raises(ValueError, match=r"class\(es\) \['other'\] \(--conf labels\)"):
        build(ds, label_names=["normal", "abnormal", "other"])
    # every class needs images of two patients: split by patient, a one-patient class ends up on one side only
    ds4 = make_datastore(tmp_path / "few", {"a": "normal", "b": "abnormal", "c": "normal", "d": "abnormal"},
                         infos={"a": {"patient_id": "P1"}, "c": {"patient_id": "P1"}})
    with pytest.raises(ValueError, match="class.es. 'normal' all belong to patient 'P1'.*at least 2 patients per class"):
        build(ds4)


@pytest.mark.parametrize(
    "labels, kwargs, match",
    [
        ({"a": None, "b": None}, {}, "has no image with a 'final' label .2 image.s., none labelled"),
        ({"a": "normal", "b": "cyst"}, {"label_names": ["normal", "abnormal"]},
         r"image 'b': unknown class 'cyst'; the classes are \['normal', 'abnormal'\]"),
        ({"a": "normal", "b": 2}, {"label_names": ["normal", "abnormal"]}, r"image 'b': class index 2 is outside 0..1"),
        ({"a": "normal", "b": 1}, {}, "mix names .'normal'. and indices .1."),
        ({"a": "normal", "b": "normal"}, {}, "are of class 'normal': .* at least 2 classes"),
        ({"a": "$x", "b": "y"}, {}, "class name '.x' starts with"),
        # one class spelled two ways became two classes (trial T65a): refused as in a datalist
        ({"a": "Aneurysm", "b": "aneurysm", "c": "normal"}, {},
         r"the datastore's 'final' labels: the labels 'Aneurysm' \(image 'a'\) and 'aneurysm' \(image 'b'\) differ "
         r"only in case"),
    ],
)
def test_datalist_errors(app, tmp_path, labels, kwargs, match):
    ds = make_datastore(tmp_path, labels)
    with pytest.raises(ValueError, match=match):
        app["das_train"].datastore_datalist(ds, **kwargs)


def test_a_rare_label_one_typo_from_a_frequent_one_is_warned(app, tmp_path, caplog):
    """'aneurism' twice beside 10 'aneurysm' became a class of its own without a word (trial T65a)."""
    labels = {f"s{i}": "aneurysm" for i in range(10)} | {f"n{i}": "normal" for i in range(4)}
    labels |= {"t0": "aneurism", "t1": "aneurism"}
    with caplog.at_level("WARNING"):
        datalist, _ = app["das_train"].datastore_datalist(make_datastore(tmp_path, labels))
    assert ("the label 'aneurism' (image 't0') occurs in 2 items and is one typo away from 'aneurysm' (10 items"
            in caplog.text)
    # a warning only: real classes can be that close
    assert list(datalist["labels"].values()) == ["aneurism", "aneurysm", "normal"]


def test_datalist_label_without_class_and_one_patient(app, tmp_path):
    build = app["das_train"].datastore_datalist
    ds = make_datastore(tmp_path, {"a": "normal", "b": "abnormal"}, file_labels={"c": None, "d": None})
    with pytest.raises(ValueError, match=r"2 image\(s\) with a 'final' label have no class: 'c', 'd'"):
        build(ds)
    ds2 = make_datastore(tmp_path / "one", {"a": "normal", "b": "abnormal"},
                         infos={"a": {"PatientID": "X"}, "b": {"PatientID": "X"}})
    with pytest.raises(ValueError, match=r"belong to 1 patient\(s\): at least 2"):
        build(ds2)


# ---------------------------------------------------------------------------------------------------- stand-in bundle
STANDIN_SCRIPT = '''
"""Stand-in training: read the datalist with the bundle reader, one SGD step of the real DAS network, save it."""
import os

import torch
from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Resize, ScaleIntensity

from monai_das.data import load_datalist
from monai_das.networks import build_classifier


def network(num_classes, spatial_size):
    return build_classifier("das", num_classes=num_classes, num_frames=int(spatial_size[0]), keep_ratio=0.5)


def main(datalist, dataset_dir, bundle_root, max_epochs, spatial_size, seed=0):
    items = load_datalist(datalist, dataset_dir=dataset_dir)
    num_classes = len(__import__("json").load(open(datalist))["labels"])
    load = Compose([LoadImage(image_only=True), EnsureChannelFirst(), ScaleIntensity(), Resize(spatial_size)])
    x = torch.stack([torch.as_tensor(load(it["image"])) for it in items]).float()
    y = torch.tensor([it["label"] for it in items])
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    net = network(num_classes, spatial_size)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    net.train()
    for _ in range(int(max_epochs)):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    os.makedirs(os.path.join(bundle_root, "models"), exist_ok=True)
    torch.save(net.state_dict(), os.path.join(bundle_root, "models", "model.pt"))
    print(f"stand-in trained on {len(items)} items, {num_classes} classes, cwd {os.getcwd()}")
'''


def make_standin_bundle(root: Path) -> Path:
    """A MONAI bundle whose train config defines the keys the task passes and trains via ``STANDIN_SCRIPT``."""
    (root / "configs").mkdir(parents=True)
    (root / "scripts").mkdir()
    (root / "scripts" / "standin_train.py").write_text(STANDIN_SCRIPT)
    script = str(root / "scripts" / "standin_train.py")
    meta = {
        "version": "0.0.1", "description": "stand-in DAS bundle",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [28, 28, 28]}},
            "outputs": {"pred": {"type": "logits", "num_channels": 2, "channel_def": {"0": "c0", "1": "c1"}}},
        },
    }
    common = {
        "imports": ["$import os", "$import runpy", "$import torch", "$import monai_das",
                    "$import monai_das.data", "$import monai_das.engines"],
        "bundle_root": ".", "datalist": None, "dataset_dir": None, "spatial_size": [28, 28, 28],
        "script": script,
    }
    train = {
        **common, "max_epochs": 3, "mlflow": True, "progress_bar": True, "device": "cpu", "batch_size": 8,
        "initialize": ["$monai_das.engines.check_overrides()"],
        "run": ["$runpy.run_path(@script)['main'](@datalist, @dataset_dir, @bundle_root, @max_epochs, "
                "@spatial_size)"],
    }
    inference = {
        **common,
        "num_classes": "$len(monai_das.data.datalist_classes(@datalist))",
        "network_def": {"_target_": "monai_das.networks.build_classifier", "method": "das",
                        "num_classes": "@num_classes", "num_frames": "$@spatial_size[0]", "keep_ratio": 0.5,
                        "layout": "volume", "slice_axis": 0},
    }
    for name, data in (("metadata.json", meta), ("train.json", train), ("inference.json", inference)):
        (root / "configs" / name).write_text(json.dumps(data, indent=2))
    return root


def test_build_run_command_and_model_dir(app, tmp_path, monkeypatch, caplog):
    bundle = make_standin_bundle(tmp_path / "bundle")
    model_dir = tmp_path / "app" / "model" / "bundle"
    ds = make_datastore(tmp_path / "data", LABELS6)
    task = app["DASTrain"](bundle, model_dir, spatial_size=GRID, overrides={"batch_size": 2})
    assert task.is_valid() and task.max_epochs == 3 and task.spatial_size == list(GRID)
    assert task.info()["description"] == "stand-in DAS bundle" and task.info()["config"]["max_epochs"] == 3

    run = task.build_run({"max_epochs": 1, "device": ["cpu"]}, ds)
    # the run trains in a staging folder (its bundle_root), published into model_dir only when it completes
    staging = model_dir.resolve() / "monailabel" / "training"
    datalist = staging / "datalist.json"
    studies = str((tmp_path / "data" / "studies").resolve())
    assert run["command"] == [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(bundle / "configs" / "train.json"),
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--bundle_root", str(staging), "--datalist", str(datalist), "--dataset_dir", studies,
        "--max_epochs", "1", "--mlflow", "false", "--progress_bar", "false", "--spatial_size", "[16, 16, 16]",
        "--device", "$torch.device('cpu')", "--batch_size", "2",
    ]
    assert json.loads(datalist.read_text())["labels"] == {"0": "abnormal", "1": "normal"}
    assert json.loads((model_dir / "monailabel" / "command.json").read_text()) == run["command"]
    assert not (model_dir / "configs").exists()  # nothing of this run is served before it completes
    meta = json.loads((staging / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "abnormal", "1": "normal"}
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == list(GRID)
    inference = json.loads((staging / "configs" / "inference.json").read_text())
    # where they will be once published
    assert inference["bundle_root"] == str(model_dir.resolve())
    assert inference["datalist"] == str(model_dir.resolve() / "monailabel" / "datalist.json")
    assert inference["dataset_dir"] == studies and inference["spatial_size"] == list(GRID)

    with pytest.raises(ValueError, match="max_epochs must be a positive integer"):
        task.build_run({"max_epochs": 0}, ds)
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda', 'cuda:N' or a device name"):
        task.build_run({"device": "cpu'); import os; ('"}, ds)
    # the train dialog's device names (a GPU's name on a GPU server) as MONAI Label maps them; of a list the first,
    # the others named in a warning (it trained on the first one without a word)
    monkeypatch.setattr(app["das_train"], "device_map", lambda: {"NVIDIA H200:0": "cuda:0", "NVIDIA H200:1": "cuda:1"})
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # (a GPU server; without one cuda is refused)
    with caplog.at_level("WARNING"):
        run = task.build_run({"max_epochs": 1, "device": ["NVIDIA H200:1", "NVIDIA H200:0"]}, ds)
    assert run["command"][run["command"].index("--device") + 1] == "$torch.device('cuda:1')"
    assert "one process on one device: 'NVIDIA H200:1' of ['NVIDIA H200:1', 'NVIDIA H200:0']" in caplog.text
    with pytest.raises(ValueError, match=r"a device name of the train dialog \(NVIDIA H200:0, NVIDIA H200:1\)"):
        task.build_run({"device": "TPU"}, ds)


def test_model_dir_inference_config_builds_the_trained_network(app, tmp_path):
    """The model folder's configs/inference.json carries the training overrides that describe the data and the
    network (train_overrides slice_axis "axial" was refused by a bundle run of it: 'slice_axis: trained 2, this run
    0'), not the run-time ones."""
    over = {"spatial_size": [16, 16, 8], "slice_axis": "axial", "method": "uniform", "temporal_head": "max",
            "percentiles": [1, 99], "device": "$torch.device('cuda')", "batch_size": 4, "max_epochs": 2}
    model_dir = app["das_train"].prepare_model_dir(repo_bundle(), tmp_path / "model", over, ["a", "b"])
    inference = json.loads((model_dir / "configs" / "inference.json").read_text())
    original = json.loads((repo_bundle() / "configs" / "inference.json").read_text())
    for key in ("spatial_size", "slice_axis", "method", "temporal_head", "percentiles"):
        assert inference[key] == over[key], key
    assert inference["device"] == original["device"] and inference["batch_size"] == original["batch_size"]
    assert "max_epochs" not in inference


def test_video_bundle_trains_on_a_frame_grid(app, tmp_path):
    """The video bundle could not be trained through the app (trial Z): its metadata's [C, H, W] became the grid
    (--spatial_size [1, 64, 64], refused by the bundle, also over train_overrides' size), and --conf spatial_size
    took only 'D,H,W'. A clip's frame [H, W] now; the volume layout still takes three."""
    bundle = REPO / "bundles" / "das_video_classification"
    ds = make_datastore(tmp_path / "data", LABELS6)
    train = app["DASTrain"](bundle, tmp_path / "m1")
    assert train.layout == "video" and train.spatial_size == [64, 64]  # the metadata's [1, 64, 64]
    command = train.build_run({"max_epochs": 1}, ds)["command"]
    assert command[command.index("--spatial_size") + 1] == "[64, 64]"
    # train_overrides' size (or spatial_size) wins over the metadata's grid
    train = app["DASTrain"](bundle, tmp_path / "m2", overrides={"size": 32, "num_frames": 16})
    command = train.build_run({"max_epochs": 1}, ds)["command"]
    assert "--spatial_size" not in command and command[command.index("--size") + 1] == "32"
    image = json.loads((tmp_path / "m2" / "monailabel" / "training" / "configs" / "metadata.json").read_text())[
        "network_data_format"]["inputs"]["image"]
    assert image["spatial_shape"] == [1, 32, 32] and image["num_channels"] == 16 and len(image["channel_def"]) == 16
    inference = json.loads((tmp_path / "m2" / "monailabel" / "training" / "configs" / "inference.json").read_text())
    assert inference["size"] == 32 and inference["num_frames"] == 16
    # --conf spatial_size: 'H,W' for a video bundle, checked against the bundle's layout
    settings = app["app_tasks"].app_settings({"bundle": str(bundle), "model_dir": str(tmp_path / "m3"),
                                              "spatial_size": "32,32"}, tmp_path / "app")
    assert app["app_tasks"].make_train_task(settings).spatial_size == [32, 32]
    # the infer task of a video bundle before any model (a server's start): dimension 2, not 3 (review H6, R53)
    infer = app["app_tasks"].make_infer_task(settings)
    assert infer.predictor is None and infer.info()["dimension"] == 2
    with pytest.raises(ValueError, match=r"spatial_size of this video bundle must be 2 positive integers, a frame's "
                                         r"'H,W' \(the clips' frame count is train_overrides num_frames\); got "
                                         r"\[1, 64, 64\]"):
        app["DASTrain"](bundle, tmp_path / "m4", spatial_size=[1, 64, 64])
    with pytest.raises(ValueError, match=r"spatial_size of this volume bundle must be 3 positive integers"):
        app["DASTrain"](repo_bundle(), tmp_path / "m5", spatial_size=[32, 32])


def test_misspelt_train_override_is_named(app, tmp_path):
    task = app["DASTrain"](repo_bundle(), tmp_path / "model", spatial_size=GRID, overrides={"max_epoch": 3})
    with pytest.raises(ValueError, match="train_overrides: .* does not define 'max_epoch': did you mean 'max_epochs'"):
        task.build_run({}, make_datastore(tmp_path / "data", LABELS6))


def test_bundle_without_datalist_key_is_refused(app, tmp_path):
    """A train config that does not read --datalist would silently train on its default data: refused up front."""
    bundle = tmp_path / "bundle"
    shutil.copytree(repo_bundle() / "configs", bundle / "configs")
    train = json.loads((bundle / "configs" / "train.json").read_text())
    for key in ("datalist", "dataset_dir", "spatial_size"):
        train.pop(key, None)
    (bundle / "configs" / "train.json").write_text(json.dumps(train))
    task = app["DASTrain"](bundle, tmp_path / "model", spatial_size=GRID)
    assert task.is_valid()
    with pytest.raises(ValueError, match=r"does not define \['datalist', 'dataset_dir'"):
        task(
            {"max_epochs": 1}, make_datastore(tmp_path / "data", LABELS6)
        )
    assert not (tmp_path / "model" / "models" / "model.pt").exists()


def test_train_standin_bundle_then_infer_reloads(app, tmp_path):
    """The whole loop on the stand-in bundle: no model → train → the infer task serves it → new model → reloaded."""
    bundle = make_standin_bundle(tmp_path / "bundle")
    model_dir = tmp_path / "app" / "model" / "bundle"
    ds = make_datastore(tmp_path / "data", LABELS6)
    settings = app["app_tasks"].app_settings(
        {"bundle": str(bundle), "model_dir": str(model_dir), "spatial_size": "16,16,16", "max_epochs": "1"},
        tmp_path / "app",
    )
    infer = app["app_tasks"].make_infer_task(settings)
    train = app["app_tasks"].make_train_task(settings)
    assert not infer.is_valid() and infer.predictor is None  # the bundle ships no model: nothing to serve yet
    from monailabel.interfaces.exception import MONAILabelException

    with pytest.raises(MONAILabelException, match="no DAS model yet"):
        infer({"image": ds.get_image_uri("s1")})

    stats = train({"device": "cpu"}, ds)
    model = model_dir / "models" / "model.pt"
    assert stats["returncode"] == 0 and stats["num_images"] == 6 and stats["classes"] == ["abnormal", "normal"]
    assert model.is_file() and Path(stats["model"]) == model.resolve()
    log = (model_dir / "monailabel" / "train.log").read_text()
    assert "stand-in trained on 6 items, 2 classes" in log and f"cwd {model_dir.resolve()}/monailabel/training" in log
    assert not (model_dir / "monailabel" / "training").exists()  # published: moved into the model folder
    assert (model_dir / "monailabel" / "datalist.json").is_file() and train.stats()["published"] is True
    assert train.stats()["returncode"] == 0

    assert infer.is_valid() and infer.info()["labels"] == {"abnormal": 0, "normal": 1}
    first = infer.predictor
    assert first.source == str(model.resolve()) and first.spec.spatial_size == GRID
    _, result = infer({"image": ds.get_image_uri("s1")})
    assert {p["label"] for p in result["prediction"]} == {"abnormal", "normal"}
    assert result["das"]["num_frames"] == 16 and result["das"]["num_kept"] == 8

    # a new model.pt (as the next training run writes it, atomically): the infer task reloads it
    import torch

    state = torch.load(model, weights_only=True)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    time.sleep(0.01)  # a new mtime even on coarse clocks
    torch.save(state, model.with_name("model.pt.tmp"))
    model.with_name("model.pt.tmp").replace(model)
    _, second = infer({"image": ds.get_image_uri("s1")})
    assert infer.predictor is not first  # the infer task picked up the new model.pt
    assert second["das"]["probabilities"] != result["das"]["probabilities"]
    assert not any("bundle's own model" in w for w in second["das"]["warnings"])
    # a model folder without a model yet, beside a bundle that ships one: the bundle's model is served, and the
    # client is told so (it answered with the bundle's classes without a word)
    shutil.copytree(model_dir / "models", bundle / "models")
    shutil.copy(model_dir / "configs" / "inference.json", bundle / "configs" / "inference.json")
    fresh = app["app_tasks"].make_infer_task({**settings, "model_dir": str(tmp_path / "fresh")})
    _, third = fresh({"image": ds.get_image_uri("s1")})
    assert any("served by the bundle's own model" in w and "no model has been trained on this datastore" in w
               for w in third["das"]["warnings"])


def test_training_failure_is_reported(app, tmp_path):
    """A failing training subprocess: its exception lines and exit code in the error, the stats on disk."""
    bundle = make_standin_bundle(tmp_path / "bundle")
    fake = tmp_path / "python"  # stands in for the interpreter: fails the way a bundle run does, without the start-up
    fake.write_text("#!/bin/sh\necho 'Traceback (most recent call last):'\n"
                    "echo \"ValueError: datalist file 'x.json' does not exist.\"\necho 'more output'\nexit 3\n")
    fake.chmod(0o755)
    task = app["DASTrain"](bundle, tmp_path / "model", spatial_size=GRID, python=str(fake))
    match = r"(?s)DAS bundle training failed \(exit code 3\).*\nValueError: datalist file"
    with pytest.raises(RuntimeError, match=match):
        task({"max_epochs": 1}, make_datastore(tmp_path / "data", LABELS6))
    stats = task.stats()
    assert stats["returncode"] == 3 and stats["command"][0] == str(fake)
    assert "more output" in (tmp_path / "model" / "monailabel" / "train.log").read_text()


def test_a_second_train_request_from_another_process_is_refused(app, tmp_path):
    """A second request from another process (MONAI Label's subprocess train task beside a run_sync one) cleared the
    first's staging folder under its running bundle process (trial T65a): refused naming the running request, which
    keeps its staging folder; the next request after it runs."""
    import subprocess

    bundle = make_standin_bundle(tmp_path / "bundle")
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ValueError: stop here'\nexit 3\n")
    fake.chmod(0o755)
    task = app["DASTrain"](bundle, tmp_path / "model", spatial_size=GRID, python=str(fake))
    run_dir = tmp_path / "model" / "monailabel"
    (run_dir / "training").mkdir(parents=True)
    (run_dir / "training" / "theirs.txt").write_text("the running request's files")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from monai_das.utils.io import lock_folder; "
        f"held = lock_folder({str(run_dir)!r}, '.train_request.lock', '.train_request.owner', str); "
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=rf"another train request of '.*model' is running \(pid {holder.pid} on "
                                               r".*\): wait for it to finish \(its log: .*train\.log\)"):
            task({"max_epochs": 1}, make_datastore(tmp_path / "data", LABELS6))
        assert (run_dir / "training" / "theirs.txt").is_file()  # not cleared under it
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(RuntimeError, match=r"DAS bundle training failed \(exit code 3\)"):  # it ran, then failed
        task({"max_epochs": 1}, make_datastore(tmp_path / "data2", LABELS6))
    assert not (run_dir / ".train_request.owner").exists()


def test_request_keys_the_task_does_not_read_are_named_and_cuda_without_a_gpu_refused(app, tmp_path, caplog):
    """A train request's 'max_epoch' or 'epochs' ran the default 15 epochs, its 'keep_ratio' was dropped and the app's
    train_overrides replaced its max_epochs, all without a word; 'device': 'cuda' on a machine without a GPU failed
    14 s into the run (trial T65a)."""
    import torch

    bundle = make_standin_bundle(tmp_path / "bundle")
    task = app["DASTrain"](bundle, tmp_path / "model", spatial_size=GRID, overrides={"max_epochs": 50})
    with caplog.at_level("WARNING"):
        notes = task.request_notes({"max_epoch": 1, "epochs": 2, "keep_ratio": 0.25, "max_epochs": 1,
                                    "device": "cpu", "name": "train_01", "client_id": "x"})
    assert len(notes) == 4 and all(n in caplog.text for n in notes)
    assert "'max_epoch' is not a key of this task and was ignored: did you mean 'max_epochs'?" in notes[0]
    assert "'epochs'" in notes[1] and "did you mean 'max_epochs'?" in notes[1]
    assert "request key 'keep_ratio' was ignored: a request sets max_epochs, device; the app's --conf " in notes[2]
    assert "request max_epochs 1 was replaced by the app's train_overrides max_epochs 50" in notes[3]
    assert app["DASTrain"](bundle, tmp_path / "m2", spatial_size=GRID).request_notes({"max_epochs": 3}) == []
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device 'cuda:0': this machine has no CUDA GPU .*device 'cpu'"):
            task.build_run({"device": "cuda:0"}, make_datastore(tmp_path / "data", LABELS6))


def test_training_without_a_best_model_keeps_serving_the_previous_one(app, tmp_path):
    """A retraining that keeps no best model (the bundle run exits with 0 without a model.pt) reports the failed
    training; the served model.pt stays."""
    bundle = make_standin_bundle(tmp_path / "bundle")
    models = tmp_path / "model" / "models"
    models.mkdir(parents=True)
    (models / "model.pt").write_bytes(b"the served model")
    fake = tmp_path / "python"  # the bundle run, as it ends when no validation epoch could be kept
    fake.write_text("#!/bin/sh\necho 'no epoch was kept as the best model'\nexit 0\n")
    fake.chmod(0o755)
    task = app["DASTrain"](bundle, tmp_path / "model", spatial_size=GRID, python=str(fake))
    with pytest.raises(RuntimeError, match="finished without writing a new"):
        task({"max_epochs": 1}, make_datastore(tmp_path / "data", LABELS6))
    assert (models / "model.pt").read_bytes() == b"the served model"
    assert not (models / "model.pt.previous").exists()


def fake_bundle_run(path: Path, body: str) -> Path:
    """A stand-in interpreter for the bundle run: ``$root`` is its ``--bundle_root``; ``body`` runs there."""
    path.write_text('#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --bundle_root ] && root="$2"; shift; done\n'
                    'mkdir -p "$root/models"\n' + body)
    path.chmod(0o755)
    return path


def test_killed_training_never_replaces_the_served_model(app, tmp_path, caplog):
    """Trial F B10: the bundle run killed after writing its best epoch so far (and holding its lock files) replaced
    the served model.pt; the infer task then served it without a word. Now the run trains in a staging folder: the
    served model, configs and datalist stay; the next run removes the dead run's lock files (naming it) and, once
    completed, is published; a lock still held refuses a new run."""
    from filelock import UnixFileLock

    from monai_das.handlers.checkpoint import LOCK_NAME, OWNER_NAME

    bundle = make_standin_bundle(tmp_path / "bundle")
    model_dir = tmp_path / "model"
    for sub, name, text in (("models", "model.pt", "the served model"), ("configs", "metadata.json", "{}"),
                            ("monailabel", "datalist.json", '{"served": 1}')):
        (model_dir / sub).mkdir(parents=True, exist_ok=True)
        (model_dir / sub / name).write_text(text)
    ds = make_datastore(tmp_path / "data", LABELS6)
    killed = fake_bundle_run(tmp_path / "python_killed", (
        'printf "half-trained" > "$root/models/model.pt"\n'
        f'echo "pid 4242 on trialhost, since 2026-12-05" > "$root/models/{OWNER_NAME}"\n'
        f': > "$root/models/{LOCK_NAME}"\nkill -9 $$\n'))
    task = app["DASTrain"](bundle, model_dir, spatial_size=GRID, python=str(killed))
    with pytest.raises(RuntimeError, match=r"exit code -9: killed by signal 9\); the served model '.*model\.pt' is "
                                           r"unchanged \(this run's files: '.*monailabel/training'\)"):
        task({"max_epochs": 1}, ds)
    assert (model_dir / "models" / "model.pt").read_text() == "the served model"
    assert (model_dir / "configs" / "metadata.json").read_text() == "{}"
    assert (model_dir / "monailabel" / "datalist.json").read_text() == '{"served": 1}'
    assert sorted(p.name for p in (model_dir / "models").iterdir()) == ["model.pt"]  # no lock files served
    assert task.stats()["returncode"] == -9 and task.stats()["published"] is False

    done = fake_bundle_run(tmp_path / "python_done", (
        'mkdir -p "$root/eval"\necho report > "$root/eval/report.txt"\n'
        'echo "2026-12-07 10:00:00 - monai_das.handlers - WARNING - best val_auc 0.500: it may be chance"\n'
        'echo "2026-12-07 10:00:01 - monai_das.handlers - INFO - training done: best val_auc 0.500 at epoch 1 of 1"\n'
        'printf "new model" > "$root/models/model.pt"\necho "{}" > "$root/models/metadata.json"\n'))
    task.python = str(done)
    with caplog.at_level("WARNING"):
        stats = task({"max_epochs": 1}, ds)
    # the run's warnings and summary reach the client (they were in train.log only; trial T65a)
    assert stats["training_warnings"] == ["best val_auc 0.500: it may be chance"]
    assert stats["summary"] == "training done: best val_auc 0.500 at epoch 1 of 1"
    assert "removed the lock files of a training run in" in caplog.text
    assert "did not complete (pid 4242 on trialhost, since 2026-12-05)" in caplog.text
    assert stats["published"] is True and (model_dir / "models" / "model.pt").read_text() == "new model"
    assert (model_dir / "eval" / "report.txt").is_file() and (model_dir / "models" / "metadata.json").is_file()
    meta = json.loads((model_dir / "configs" / "metadata.json").read_text())  # this run's configs, with the model
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "abnormal", "1": "normal"}
    assert json.loads((model_dir / "monailabel" / "datalist.json").read_text())["labels"]["0"] == "abnormal"
    assert not (model_dir / "monailabel" / "training").exists()

    # a run of another process holding the staging folder's lock: refused, naming it
    held = model_dir / "monailabel" / "training" / "models"
    held.mkdir(parents=True)
    (held / OWNER_NAME).write_text("pid 77 on otherhost")
    lock = UnixFileLock(str(held / LOCK_NAME))
    lock.acquire(timeout=0)
    try:
        with pytest.raises(RuntimeError, match=r"a training run is writing into '.*training/models' \(pid 77 on "
                                               r"otherhost\)"):
            task({"max_epochs": 1}, ds)
    finally:
        lock.release()
    assert (model_dir / "models" / "model.pt").read_text() == "new model"


def test_app_settings(app, tmp_path):
    settings = app["app_tasks"].app_settings(
        {"labels": "normal, abnormal", "spatial_size": "[32, 64, 64]", "train_overrides": '{"batch_size": 4}',
         "train": "false", "modalities": "CT,MR"}, tmp_path,
    )
    assert settings["bundle"] == str(app["app_tasks"].DEFAULT_BUNDLE.resolve())
    assert settings["model_dir"] == str((tmp_path / "model" / "das_volume_classification").resolve())
    assert settings["labels"] == ["normal", "abnormal"] and settings["spatial_size"] == [32, 64, 64]
    assert settings["train_overrides"] == {"batch_size": 4} and settings["train"] is False
    assert settings["loader_options"] == {"allowed_modalities": ["CT", "MR"]}
    assert app["app_tasks"].make_train_task(settings) is None
    with pytest.raises(ValueError, match=r"spatial_size must be three positive integers 'D,H,W' \(a volume bundle\) "
                                         r"or two 'H,W' \(a video bundle's frame\)"):
        app["app_tasks"].app_settings({"spatial_size": "16"}, tmp_path)
    # the slice axis as a setting of its own (a train override); bad numbers and JSON are named
    axial = app["app_tasks"].app_settings({"slice_axis": "axial", "train_overrides": '{"lr": 0.01}'}, tmp_path)
    assert axial["train_overrides"] == {"lr": 0.01, "slice_axis": "axial"}
    assert app["app_tasks"].app_settings({"slice_axis": "2"}, tmp_path)["train_overrides"] == {"slice_axis": 2}
    for conf, match in (({"max_epochs": "two"}, "--conf max_epochs must be an integer, got 'two'"),
                        ({"keep_ratio": "half"}, "--conf keep_ratio must be a number"),
                        ({"train_overrides": "{batch_size: 4}"}, "--conf train_overrides must be a JSON object"),
                        ({"slice_axis": "1", "train_overrides": '{"slice_axis": 2}'}, "give the slice axis once"),
                        # accepted at start-up, they failed every request, or a train run 13 s in (trial T65a)
                        ({"keep_ratio": "1.5"}, r"--conf keep_ratio: keep_ratio must be a number in \(0, 1\]"),
                        ({"num_kept": "-1"}, "--conf num_kept must be a positive integer, got '-1'"),
                        ({"max_epochs": "-3"}, "--conf max_epochs must be a positive integer, got '-3'"),
                        ({"slice_axis": "sideways"}, r"--conf slice_axis: slice_axis must be 0, 1, 2 or one of"),
                        ({"train_overrides": '{"slice_axis": 5}'}, r"--conf train_overrides' slice_axis: slice_axis"),
                        # review R71b: accepted at start-up, every train request failed
                        ({"labels": "normal,,abnormal"},
                         r"--conf labels must be distinct, non-blank class names \(name 2 is blank\)"),
                        ({"labels": "normal, Normal ,normal"},
                         r"--conf labels must be distinct, non-blank class names \('normal' is given 2 times\)"),
                        ({"labels": "$bad"}, r"--conf labels: class name '\$bad'"),
                        # trial h72i: names a datalist refuses (spelled alike), accepted; train requests failed later
                        ({"labels": "Normal, normal"}, r"--conf labels: the class names 'Normal' and 'normal' differ "
                                                       r"only in case: two classes, or one spelled two ways\?"),
                        ({"labels": "non-covid,Non_Covid"}, r"'non-covid' and 'Non_Covid' differ only in case, spaces "
                                                            r"or punctuation"),
                        # trial t72h: one class (another separator), accepted, then every train request failed
                        ({"labels": "normal;abnormal"}, r"--conf labels names one class \('normal;abnormal'\): a "
                                                        r"classifier learns at least two; give them comma-separated")):
        with pytest.raises(ValueError, match=match):
            app["app_tasks"].app_settings(conf, tmp_path)


def test_conf_typos_are_refused_and_unknown_keys_named(app, tmp_path, caplog):
    """Trial F B4: --conf spatial_sise 64,64,64 built a train task on the bundle's 28³ grid without a word."""
    settings = app["app_tasks"].app_settings
    for key, meant in (("spatial_sise", "spatial_size"), ("keep-ratio", "keep_ratio"), ("num_kep", "num_kept"),
                       ("Engine", "engine"), ("max_epoch", "max_epochs"), ("train_override", "train_overrides")):
        with pytest.raises(ValueError, match=rf"--conf: unknown key\(s\) '{key}': did you mean '{meant}'\?"):
            settings({key: "1"}, tmp_path)
    with caplog.at_level("WARNING"):  # far from every key: perhaps meant for something else, named
        got = settings({"server_mode": "true", "zoo_source": "github", "colour": "red"}, tmp_path)
    assert "--conf colour: not a key of this app" in caplog.text
    assert "--conf server_mode" not in caplog.text and "--conf zoo_source" not in caplog.text  # MONAI Label's
    assert got["spatial_size"] is None
    # a flag is true or false: 'ture' read as false (preload off, or no train task) without a word (trial T66a)
    for key, value in (("preload", "ture"), ("train", "treu"), ("preload", "enabled")):
        with pytest.raises(ValueError, match=rf"--conf {key} must be true or false .*got '{value}'"):
            settings({key: value}, tmp_path)
    assert settings({"preload": "on", "train": "0"}, tmp_path)["preload"] is True
    assert settings({"train": "No"}, tmp_path)["train"] is False


# ---------------------------------------------------------------------------------------------------- the real bundle
def test_train_repo_bundle_one_epoch(app, tmp_path):
    bundle = repo_bundle()
    train_keys = json.loads((bundle / "configs" / "train.json").read_text())  # a broken train.json fails here
    assert "datalist" in train_keys, "the bundle's train.json must define 'datalist' to train on a datastore"
    # one thread: two BLAS/OpenMP threads fighting other processes for 2 cores make a step 10-50x slower
    tiny = {"batch_size": 2, "num_figures": 0, "num_workers": 0, "num_threads": 1}
    model_dir = tmp_path / "model"
    ds = make_datastore(tmp_path / "data", {**LABELS6, "s6": "normal", "s7": "abnormal"})
    task = app["DASTrain"](bundle, model_dir, spatial_size=GRID,
                           overrides={k: v for k, v in tiny.items() if k in train_keys})
    stats = task({"max_epochs": 1, "device": "cpu"}, ds)
    assert stats["returncode"] == 0 and (model_dir / "models" / "model.pt").is_file()
    infer = app["DASClassification"](str(bundle), model_dir=str(model_dir))
    assert infer.predictor.source == str((model_dir / "models" / "model.pt").resolve())
    _, result = infer({"image": ds.get_image_uri("s1")})
    assert {p["label"] for p in result["prediction"]} == {"abnormal", "normal"}


def test_a_publish_cut_short_is_finished_by_the_next_run_and_the_model_outdates_old_exports(app, tmp_path,
                                                                                          monkeypatch, caplog):
    """Review H: a publish that failed half-way (disk full) left the completed model in the staging folder, which the
    next request cleared; and a published model.pt kept the time of its best epoch, older than an export of the
    former model written meanwhile (the infer task then served the stale export)."""
    import os as _os

    bundle = make_standin_bundle(tmp_path / "bundle")
    model_dir = tmp_path / "model"
    (model_dir / "models").mkdir(parents=True)
    (model_dir / "models" / "model.pt").write_text("served A")
    ds = make_datastore(tmp_path / "data", LABELS6)
    done = fake_bundle_run(tmp_path / "python_done", 'printf "model B" > "$root/models/model.pt"\n')
    task = app["DASTrain"](bundle, model_dir, spatial_size=GRID, python=str(done))
    real_replace = _os.replace

    def full_disk(src, dst):
        if _os.fspath(dst).endswith(_os.path.join("models", "model.pt")):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(_os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        task({"max_epochs": 1}, ds)
    monkeypatch.setattr(_os, "replace", real_replace)
    assert (model_dir / "models" / "model.pt").read_text() == "served A"
    assert (model_dir / "monailabel" / "training" / "models" / "model.pt").read_text() == "model B"  # kept
    (model_dir / "models" / "model.onnx").write_text("export of A, written after B's best epoch")
    failing = fake_bundle_run(tmp_path / "python_fail", "exit 3\n")
    task.python = str(failing)
    with caplog.at_level("WARNING"), pytest.raises(RuntimeError, match="exit code 3"):
        task({"max_epochs": 1}, ds)  # the completed run is published first, then this one fails
    assert "publishing it now" in caplog.text
    assert (model_dir / "models" / "model.pt").read_text() == "model B"
    served = model_dir / "models"
    assert (served / "model.pt").stat().st_mtime_ns >= (served / "model.onnx").stat().st_mtime_ns


@pytest.mark.parametrize("value, kept", [("y", True), (1, True), ("true", True), ("off", False), (None, False)])
def test_resume_override_is_read_as_the_bundle_reads_it(app, tmp_path, value, kept):
    """train_overrides' resume decides whether the staging run is continued: read with the bundle's own parser
    (monai_das.engines.utils.flag; the app's twin took "y" or 1 for false while the bundle resumed)."""
    bundle = make_standin_bundle(tmp_path / "bundle")
    task = app["DASTrain"](bundle, tmp_path / "model", spatial_size=GRID,
                           overrides=None if value is None else {"resume": value})
    (task.staging_dir / "models").mkdir(parents=True)
    (task.staging_dir / "models" / "last.pt").write_text("a killed run's")
    task._clear_staging()
    assert (task.staging_dir / "models" / "last.pt").is_file() is kept
    task.extra_overrides = {"resume": "maybe"}
    with pytest.raises(ValueError, match=r"train_overrides 'resume': expected a boolean"):
        task._clear_staging()
